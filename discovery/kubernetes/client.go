package kubernetes

import (
	"context"
	"fmt"
	"net/http"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/watch"
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

// sliceCodecs decode EndpointSlices and nothing else: the typed client of
// client-go would register every API group of Kubernetes (its
// kubernetes/scheme package), which doubled Remora's binary.
var sliceCodecs = func() serializer.CodecFactory {
	s := runtime.NewScheme()
	utilruntime.Must(discoveryv1.AddToScheme(s))
	return serializer.NewCodecFactory(s)
}()

// restClient is the Client of a real API server: a REST client of
// discovery.k8s.io/v1 (protobuf, falling back to JSON) and the metadata
// client for pods.
type restClient struct {
	slices rest.Interface
	meta   metadata.Interface
}

var _ Client = (*restClient)(nil)

// newRESTClient returns the Client of the API server cfg points at, over
// the HTTP client hc.
func newRESTClient(cfg *rest.Config, hc *http.Client) (Client, error) {
	c := rest.CopyConfig(cfg)
	c.APIPath = "/apis"
	c.GroupVersion = &discoveryv1.SchemeGroupVersion
	c.NegotiatedSerializer = sliceCodecs.WithoutConversion()
	c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	c.ContentType = runtime.ContentTypeProtobuf
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	sl, err := rest.RESTClientForConfigAndClient(c, hc)
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
	var l discoveryv1.EndpointSliceList
	err := c.slices.Get().Namespace(ns).Resource("endpointslices").
		VersionedParams(&opts, metav1.ParameterCodec).Do(ctx).Into(&l)
	if err != nil {
		return nil, err
	}
	return &l, nil
}

func (c *restClient) WatchEndpointSlices(ctx context.Context, ns string, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return c.slices.Get().Namespace(ns).Resource("endpointslices").
		VersionedParams(&opts, metav1.ParameterCodec).Watch(ctx)
}

func (c *restClient) ListPods(ctx context.Context, ns string, opts metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
	return c.meta.Resource(podsResource).Namespace(ns).List(ctx, opts)
}

func (c *restClient) WatchPods(ctx context.Context, ns string, opts metav1.ListOptions) (watch.Interface, error) {
	return c.meta.Resource(podsResource).Namespace(ns).Watch(ctx, opts)
}
