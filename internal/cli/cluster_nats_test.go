package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/conveyorhq/conveyor/internal/local"
	"github.com/conveyorhq/conveyor/internal/natsserver"
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

// TestNATSLocalCredentialsStayLocal: the embedded server's password in
// the data dir is used for a server on loopback only; a worker given
// another host's URL never sends it there.
func TestNATSLocalCredentialsStayLocal(t *testing.T) {
	dir := t.TempDir()
	saved, err := natsserver.EnsureCredentials(local.Paths{Root: dir}.NATSCredentials())
	if err != nil || saved.Password == "" {
		t.Fatalf("set up the data dir's NATS credentials: %+v, %v", saved, err)
	}
	for _, tc := range []struct {
		urls string
		want bool
	}{
		{"nats://127.0.0.1:4222", true},
		{"nats://localhost:4222,nats://[::1]:4223", true},
		{"nats://10.0.0.5:4222", false},
		{"nats://127.0.0.1:4222,nats://nats.example.com:4222", false},
		{"tls://nats.example.com:4222", false},
	} {
		c := FileConfig{DataDir: dir}
		c.Cluster.NATS = tc.urls
		c.natsLocalCredentials()
		if got := c.Cluster.NATSPassword == saved.Password && c.Cluster.NATSUser == saved.User; got != tc.want {
			t.Errorf("%s: data dir credentials used = %v, want %v", tc.urls, got, tc.want)
		}
		if !tc.want && (c.Cluster.NATSUser != "" || c.Cluster.NATSPassword != "") {
			t.Errorf("%s: credentials set to %q/%q", tc.urls, c.Cluster.NATSUser, c.Cluster.NATSPassword)
		}
	}
}
