package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigErrors: a configuration mistake stops `conveyor up` at once
// with exit code 2 and one line naming the field; a busy port is named as
// such.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "no-such-processor.sh")
	for _, tc := range []struct {
		name   string
		config string
		field  string
	}{
		{"negative timeout", "processor:\n  timeout: -1s\n", "processor.timeout"},
		{"zero workers", "workers: 0\n", "workers"},
		{"missing processor command", fmt.Sprintf("processor:\n  command: [%q]\n", missing), "processor.command"},
		{"negative max attempts", "retry:\n  max_attempts: -1\n", "retry.max_attempts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := filepath.Join(t.TempDir(), "conveyor.yaml")
			if err := os.WriteFile(cfg, []byte(tc.config), 0o644); err != nil {
				t.Fatal(err)
			}
			data := t.TempDir()
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			stdout, stderr, code := runCLI(t, "up", "--config", cfg, "--data-dir", data, "--s3-addr", addr)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code != 2 || len(lines) != 1 || !strings.Contains(stderr, tc.field) {
				t.Errorf("conveyor up with %q: exit %d, stderr %q; want exit 2 and one line naming %s (stdout %q)", tc.config, code, stderr, tc.field, stdout)
			}
			if strings.Contains(stdout, "conveyor is up") {
				t.Errorf("conveyor up came up with a bad configuration")
			}
		})
	}

	t.Run("port in use", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		stdout, stderr, code := runCLI(t, "up", "--data-dir", t.TempDir(), "--s3-addr", ln.Addr().String())
		if code == 0 || !strings.Contains(stderr, "already in use") {
			t.Errorf("conveyor up on a busy port: exit %d, stderr %q, stdout %q; want non-zero and \"already in use\"", code, stderr, stdout)
		}
	})

	t.Run("worker run bad job ID", func(t *testing.T) {
		t.Parallel()
		_, stderr, code := runCLI(t, "worker", "run", "--job", "nothex", "--data-dir", t.TempDir())
		if code != 2 || !strings.Contains(stderr, "nothex") {
			t.Errorf("conveyor worker run --job nothex: exit %d, stderr %q; want 2 naming the value", code, stderr)
		}
	})
}
