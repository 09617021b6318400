package kubernetes

import (
	"context"
	"fmt"
	"net/http"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	discoveryv1client "k8s.io/client-go/kubernetes/typed/discovery/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
)

// Client is the part of the Kubernetes API the adapter uses: list and watch
// EndpointSlices, and the metadata of pods. restClient implements it over
// client-go; unit tests use an in-memory fake. Its methods are called
// concurrently by the informers.
type Client interface {
	ListEndpointSlices(ctx context.Context, namespace string, opts metav1.ListOptions) (*discoveryv1.EndpointSliceList, error)
	WatchEndpointSlices(ctx context.Context, namespace string, opts metav1.ListOptions) (watch.Interface, error)
	// ListPods and WatchPods return the pods' metadata only
	// (PartialObjectMetadata): labels and annotations are all the
	// adapter reads.
	ListPods(ctx context.Context, namespace string, opts metav1.ListOptions) (*metav1.PartialObjectMetadataList, error)
	WatchPods(ctx context.Context, namespace string, opts metav1.ListOptions) (watch.Interface, error)
}

var podsResource = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// restClient is the Client of a real API server: the typed discovery/v1
// client (not the whole clientset, which would add every API group to the
// binary) and the metadata client for pods.
type restClient struct {
	slices discoveryv1client.DiscoveryV1Interface
	meta   metadata.Interface
}

var _ Client = (*restClient)(nil)

// newRESTClient returns the Client of the API server cfg points at, over
// the HTTP client hc.
func newRESTClient(cfg *rest.Config, hc *http.Client) (Client, error) {
	sl, err := discoveryv1client.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("discovery.k8s.io/v1 client: %w", err)
	}
	md, err := metadata.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("metadata client: %w", err)
	}
	return &restClient{slices: sl, meta: md}, nil
}

func (c *restClient) ListEndpointSlices(ctx context.Context, ns string, opts metav1.ListOptions) (*discoveryv1.EndpointSliceList, error) {
	return c.slices.EndpointSlices(ns).List(ctx, opts)
}

func (c *restClient) WatchEndpointSlices(ctx context.Context, ns string, opts metav1.ListOptions) (watch.Interface, error) {
	return c.slices.EndpointSlices(ns).Watch(ctx, opts)
}

func (c *restClient) ListPods(ctx context.Context, ns string, opts metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
	return c.meta.Resource(podsResource).Namespace(ns).List(ctx, opts)
}

func (c *restClient) WatchPods(ctx context.Context, ns string, opts metav1.ListOptions) (watch.Interface, error) {
	return c.meta.Resource(podsResource).Namespace(ns).Watch(ctx, opts)
}
