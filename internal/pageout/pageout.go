// Package pageout gives the kernel back the pages of Remora's own binary
// that only start-up needed.
//
// The binary links every registry's client (Kubernetes, etcd, Consul,
// Nacos), gRPC and protobuf. Their package initializers run before main
// and touch about 23 MiB of the executable's text and read-only data,
// which then stay resident: three quarters of an idle sidecar's RSS, for
// code a sidecar on one registry never runs again. These are clean pages
// of a file: the kernel would reclaim them under memory pressure anyway.
// Binary asks it to do so now (madvise MADV_PAGEOUT, Linux 5.4 and
// later), so that what stays resident, and counts against a pod's memory,
// is what Remora goes on using; a page needed again is read back from the
// page cache or the file.
package pageout
