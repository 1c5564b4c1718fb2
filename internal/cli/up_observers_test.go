package cli

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conveyorhq/conveyor/internal/metrics"
)

func TestWebhooksConfig(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "hook-secret")
	if err := os.WriteFile(secretFile, []byte("from-a-file-0123456789\nignored\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig(writeFile(t, `notify:
  webhooks:
    - url: https://a.example/hook
      secret: inline-secret-0123456789
    - url: http://127.0.0.1:8080/b
      states: [succeeded, dead]
      secret_file: `+secretFile+`
    - url: https://c.example/
      secret_env: HOOK_C
`), env(map[string]string{"HOOK_C": "from-the-env-0123456789"}))
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.notifier(io.Discard)
	if err != nil {
		t.Fatalf("three valid webhooks: %v", err)
	}
	if got := len(n.Stats()); got != 3 {
		t.Fatalf("%d webhooks, want 3", got)
	}
	for _, tc := range []struct {
		yaml, env, want string
	}{
		{"- url: ftp://a.example/\n  secret: inline-secret-0123456789", "", "notify.webhooks[0].url"},
		{"- url: https://a.example/\n  states: [finished]\n  secret: inline-secret-0123456789", "", `unknown state "finished"`},
		{"- url: https://a.example/", "", "exactly one of secret, secret_file or secret_env"},
		{"- url: https://a.example/\n  secret: a-secret-0123456789\n  secret_env: X", "", "exactly one of"},
		{"- url: https://a.example/\n  secret_env: NOT_SET", "", "NOT_SET is empty or not set"},
		{"- url: https://a.example/\n  secret_file: /nonexistent/secret", "", "secret_file"},
		{"- url: https://a.example/\n  secret: short", "", "at least 16"},
	} {
		c, err := loadConfig(writeFile(t, "notify:\n  webhooks:\n"+indent(tc.yaml)), env(nil))
		if err != nil {
			t.Fatalf("%s: load: %v", tc.yaml, err)
		}
		if _, err := c.notifier(io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.yaml, err, tc.want)
		}
	}
	none, err := loadConfig(writeFile(t, "workers: 1\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := none.notifier(io.Discard); n != nil || err != nil {
		t.Errorf("no webhooks configured: %v, %v; want none", n, err)
	}
}

func indent(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		out = append(out, "    "+l)
	}
	return strings.Join(out, "\n") + "\n"
}

func TestMetricsAddrConfig(t *testing.T) {
	c, err := loadConfig(writeFile(t, "metrics:\n  addr: 0.0.0.0:0\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.metricsServer(metrics.New()); err == nil || !strings.Contains(err.Error(), "metrics.token") {
		t.Errorf("metrics.addr off loopback without a token: %v, want an error naming metrics.token", err)
	}
	c, err = loadConfig(writeFile(t, ""), env(map[string]string{"CONVEYOR_METRICS_ADDR": "127.0.0.1:0", "CONVEYOR_METRICS_TOKEN": "0123456789abcdef0"}))
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.metricsServer(metrics.New())
	if err != nil {
		t.Fatalf("metrics.addr from the environment: %v", err)
	}
	s.Stop()
}
