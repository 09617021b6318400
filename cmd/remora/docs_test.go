package main

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/remora-mesh/remora/discovery/consul"
	"github.com/remora-mesh/remora/discovery/etcd"
	"github.com/remora-mesh/remora/discovery/nacos"
	"github.com/remora-mesh/remora/discovery/static"
	"github.com/remora-mesh/remora/pkg/balancer/ewma"
	"github.com/remora-mesh/remora/pkg/balancer/leastrequest"
	"github.com/remora-mesh/remora/pkg/balancer/maglev"
	"github.com/remora-mesh/remora/pkg/balancer/ringhash"
	"github.com/remora-mesh/remora/pkg/balancer/weightedroundrobin"
	"github.com/remora-mesh/remora/pkg/config"
)

// yamlKeys lists the YAML keys of t's fields, recursively, as "path.key".
func yamlKeys(t reflect.Type, prefix string, seen map[reflect.Type]bool, out *[]string) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] || t.PkgPath() == "time" {
		return
	}
	seen[t] = true
	defer delete(seen, t)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		switch {
		case !f.IsExported() || name == "-":
			continue
		case opts == "inline":
			yamlKeys(f.Type, prefix, seen, out)
			continue
		case name == "":
			continue
		}
		*out = append(*out, prefix+name)
		yamlKeys(f.Type, prefix+name+".", seen, out)
	}
}

// Every configuration field, the adapters' and policies' included, appears
// in README.md's reference as "key:".
func TestREADMEDocumentsEveryConfigField(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, typ := range []any{
		config.Config{}, static.Options{}, etcd.Options{}, consul.Options{}, nacos.Options{},
		weightedroundrobin.Options{}, leastrequest.Options{}, ewma.Options{}, ringhash.Options{}, maglev.Options{},
	} {
		yamlKeys(reflect.TypeOf(typ), "", map[reflect.Type]bool{}, &keys)
	}
	var missing []string
	for _, k := range keys {
		leaf := k[strings.LastIndexByte(k, '.')+1:]
		if !strings.Contains(string(readme), leaf+":") {
			missing = append(missing, k)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Fatalf("README.md does not document %d config fields:\n%s", len(missing), strings.Join(missing, "\n"))
	}
}
