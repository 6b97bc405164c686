package podenv

import (
	"reflect"
	"runtime/debug"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestFromEnv(t *testing.T) {
	t.Parallel()
	id := FromEnv(env(map[string]string{
		"POD_NAME": "web-0", "POD_NAMESPACE": "shop", "POD_UID": "u-1", "NODE_NAME": "kind-worker",
		"POD_IP": "10.244.1.7", "CONTAINER_NAME": "logsidecar",
	}))
	want := Identity{"web-0", "shop", "u-1", "kind-worker", "10.244.1.7", "logsidecar"}
	if id != want {
		t.Fatalf("FromEnv = %+v, want %+v", id, want)
	}
	fields := FromEnv(env(map[string]string{"POD_NAME": "web-0", "POD_IP": "10.0.0.1"})).Fields()
	wantFields := [][2]string{{"pod_name", "web-0"}, {"pod_ip", "10.0.0.1"}}
	if !reflect.DeepEqual(fields, wantFields) {
		t.Fatalf("Fields = %v, want %v", fields, wantFields)
	}
}

func TestMemoryLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		want    int64
		wantErr string
	}{
		{name: "unset", want: 0},
		{name: "bytes from downward api", env: map[string]string{"MEMORY_LIMIT": "134217728"}, want: 120795955},
		{name: "quantity", env: map[string]string{"MEMORY_LIMIT": "64Mi"}, want: 60397977},
		{name: "gomemlimit wins", env: map[string]string{"MEMORY_LIMIT": "64Mi", "GOMEMLIMIT": "10MiB"}, want: 0},
		{name: "garbage", env: map[string]string{"MEMORY_LIMIT": "lots"}, wantErr: `MEMORY_LIMIT="lots"`},
		{name: "zero", env: map[string]string{"MEMORY_LIMIT": "0"}, wantErr: "positive"},
		{name: "overflow", env: map[string]string{"MEMORY_LIMIT": "99999999999Ti"}, wantErr: "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := MemoryLimit(env(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("MemoryLimit = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestApplyMemoryLimit(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	n, err := ApplyMemoryLimit(env(map[string]string{"MEMORY_LIMIT": "100Mi"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := debug.SetMemoryLimit(-1); got != n || n != 94371840 {
		t.Fatalf("runtime limit = %d, applied %d, want 94371840", got, n)
	}
}
