// Package sdkguard serialises the creation and closing of nacos-sdk-go
// clients in a process. The SDK keeps its gRPC clients in a global map that
// it writes under a lock when creating a client but deletes from without
// one when closing it (common/remote/rpc RpcClient.Shutdown), so creating
// one client while closing another is a data race. Every creation
// (clients.NewNamingClient) and every CloseClient in Remora and its test
// helpers goes through Do.
package sdkguard

import "sync"

var mu sync.Mutex

// Do runs f while no other Do runs.
func Do(f func()) {
	mu.Lock()
	defer mu.Unlock()
	f()
}
