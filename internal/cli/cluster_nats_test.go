package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// Bad cluster settings are usage errors (exit 2) that say what to do,
// before anything starts.
func TestClusterUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"worker", "serve"}, nil, "pass --nats nats://HOST:4222"},
		{[]string{"worker", "serve", "--nats", "embedded"}, nil, "embedded is for conveyor up"},
		{[]string{"worker", "serve", "--nats", "http://h:4222"}, nil, "nats:// or tls://"},
		{[]string{"worker", "serve", "--nats", "nats://u:secret@h:4222"}, nil, "must not carry credentials in the URL"},
		{[]string{"worker", "serve", "--nats", "nats://h:4222"}, map[string]string{"CONVEYOR_CLUSTER_NATS_USER": "u"}, "go together"},
		{[]string{"worker", "serve", "--nats", "nats://h:4222"}, map[string]string{"CONVEYOR_CLUSTER_NATS_REPLICAS": "9"}, "nats_replicas must be between 1 and 5"},
		{[]string{"up", "--workers", "0"}, nil, "0 only with cluster.nats"},
		{[]string{"up", "--nats", "nats://h:4222", "--workers", "0"}, map[string]string{"CONVEYOR_CLUSTER_NATS_STREAM": "a.b"}, "cluster.nats_stream"},
	} {
		env := map[string]string{"CONVEYOR_DATA_DIR": t.TempDir()}
		for k, v := range tc.env {
			env[k] = v
		}
		var out, errb bytes.Buffer
		code := Run(context.Background(), tc.args, &out, &errb, func(k string) string { return env[k] })
		if code != ExitUsage || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("conveyor %v (env %v) = exit %d, %q; want exit %d saying %q", tc.args, tc.env, code, errb.String(), ExitUsage, tc.want)
		}
	}
}
