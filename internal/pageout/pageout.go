// Package pageout unmaps the pages of Remora's own binary that only
// start-up needed.
//
// The binary links every registry's client (Kubernetes, etcd, Consul,
// Nacos), gRPC and protobuf. Their package initializers run before main
// and touch about 20 MiB of the executable's text and read-only data,
// which then stay mapped: three quarters of an idle sidecar's RSS, for
// code a sidecar on one registry never runs again. Binary unmaps them
// from the process (madvise MADV_DONTNEED on the executable's read-only
// file mappings): they stay in the page cache, clean, where the kernel
// drops them when it needs the memory (and, unmapped, they age out of a
// container's working set), and a page the process needs again is mapped
// back from there, with no disk read. So what stays resident is what
// Remora goes on using, and neither a restart nor the first requests
// after it pay for it.
package pageout
