package upstream

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/regularfile"
)

// snapshotFile is the on-disk form of an upstream's last good node set.
type snapshotFile struct {
	Version   int                `json:"version"`
	Upstream  string             `json:"upstream"`
	Service   string             `json:"service"`
	SavedAt   time.Time          `json:"saved_at"`
	Instances []snapshotInstance `json:"instances"`
}

type snapshotInstance struct {
	ID       string            `json:"id"`
	Address  string            `json:"address"`
	Port     int               `json:"port"`
	Weight   uint32            `json:"weight"`
	Healthy  bool              `json:"healthy"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

const snapshotVersion = 1

// saveSnapshot writes set to path atomically: a temporary file in the same
// directory, synced, then renamed over the old one.
func saveSnapshot(path, upstream, service string, set []discovery.Instance, now time.Time) error {
	f := snapshotFile{Version: snapshotVersion, Upstream: upstream, Service: service, SavedAt: now.UTC(), Instances: make([]snapshotInstance, len(set))}
	for i, in := range set {
		f.Instances[i] = snapshotInstance{ID: in.ID, Address: in.Address, Port: in.Port, Weight: in.Weight, Healthy: in.Healthy, Metadata: in.Metadata}
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// loadSnapshot reads a snapshot written for service. A missing file is
// (nil, zero time, nil); a corrupt one is an error naming the file.
func loadSnapshot(path, service string) ([]discovery.Instance, time.Time, error) {
	data, err := regularfile.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	set, saved, err := ParseSnapshot(data, service)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("snapshot %s: %w", path, err)
	}
	return set, saved, nil
}

// ParseSnapshot decodes a snapshot file's content for service and checks
// every instance.
func ParseSnapshot(data []byte, service string) ([]discovery.Instance, time.Time, error) {
	var f snapshotFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, time.Time{}, fmt.Errorf("not valid JSON: %w", err)
	}
	if f.Version != snapshotVersion {
		return nil, time.Time{}, fmt.Errorf("version %d; want %d", f.Version, snapshotVersion)
	}
	if f.Service != service {
		return nil, time.Time{}, fmt.Errorf("written for service %q, not %q", f.Service, service)
	}
	set := make([]discovery.Instance, len(f.Instances))
	for i, s := range f.Instances {
		in := discovery.Instance{ID: s.ID, Address: s.Address, Port: s.Port, Weight: s.Weight, Healthy: s.Healthy, Metadata: s.Metadata}
		if err := in.Validate(); err != nil {
			return nil, time.Time{}, fmt.Errorf("instances[%d]: %w", i, err)
		}
		set[i] = in
	}
	return set, f.SavedAt, nil
}
