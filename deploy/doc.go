// Package deploy holds what runs Remora elsewhere than from a clone: the
// container image (Dockerfile), Kubernetes manifests (kubernetes/) and the
// Helm chart (helm/remora). It has no code; its tests lint and render the
// chart with a real helm and apply every manifest and rendered object to a
// real kube-apiserver (server-side, dry run), so that Kubernetes itself
// validates them. See README.md.
package deploy
