package s3server

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// validConfig is a Config that passes Validate, for a test to break.
func validConfig(t *testing.T, addr string) Config {
	t.Helper()
	return Config{
		DataDir:   filepath.Join(t.TempDir(), "data"),
		Addr:      addr,
		AccessKey: "a",
		SecretKey: "b",
	}
}

func TestStartPrintsNothingOnStdout(t *testing.T) {
	if startStdout != "" {
		t.Errorf("Start wrote to stdout:\n%s", startStdout)
	}
}

// The pre-check must catch a busy port before RunVersityGW: the shared
// gateway is running, so reaching it would fail differently.
func TestStartPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()

	srv, err := Start(context.Background(), validConfig(t, addr))
	if err == nil {
		srv.Stop()
		t.Fatal("Start succeeded on a busy port")
	}
	for _, want := range []string{addr, "already in use", "--s3-addr"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestStartOnTheSharedServersPort(t *testing.T) {
	addr := strings.TrimPrefix(testServer.Endpoint(), "http://")
	_, err := Start(context.Background(), validConfig(t, addr))
	if err == nil || !strings.Contains(err.Error(), addr+" is already in use") {
		t.Fatalf("want %s already in use, got %v", addr, err)
	}
}

func TestSecondServerInOneProcessIsRefused(t *testing.T) {
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	_, err = Start(context.Background(), validConfig(t, addr))
	if err == nil || !strings.Contains(err.Error(), "already running in this process") {
		t.Fatalf("want a refusal, got %v", err)
	}
}

// No filesystem on the test machines lacks user xattrs (tmpfs has them
// since Linux 6.6), so the check is replaced by one that fails the way
// versitygw's does on such a filesystem.
func TestStartWithoutXattrs(t *testing.T) {
	defer func(orig func(string) error) { checkXattrs = orig }(checkXattrs)
	checkXattrs = func(dir string) error {
		return &xattrError{dir: dir, cause: syscall.ENOTSUP}
	}
	cfg := validConfig(t, "127.0.0.1:1")
	_, err := Start(context.Background(), cfg)
	if err == nil {
		t.Fatal("Start succeeded without xattrs")
	}
	want := "data dir " + cfg.DataDir + " is on a filesystem without user extended attributes (xattrs); choose a --data-dir on ext4, xfs or btrfs"
	if err.Error() != want {
		t.Errorf("error:\n got %q\nwant %q", err, want)
	}
	if !errors.Is(err, syscall.ENOTSUP) {
		t.Errorf("error %v does not wrap its cause", err)
	}
}

func TestProbeXattrsOnTempDir(t *testing.T) {
	t.Parallel()
	if err := probeXattrs(t.TempDir()); err != nil {
		t.Fatalf("temp dir: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := Config{DataDir: "/srv/conveyor", AccessKey: "a", SecretKey: "b"}.WithDefaults()
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no data dir", func(c *Config) { c.DataDir = "" }, "DataDir must be set"},
		{"relative data dir", func(c *Config) { c.DataDir = "data" }, `DataDir "data" must be an absolute path`},
		{"no host", func(c *Config) { c.Addr = ":9000" }, `Addr ":9000" must be HOST:PORT`},
		{"no port", func(c *Config) { c.Addr = "127.0.0.1" }, "must be HOST:PORT"},
		{"port zero", func(c *Config) { c.Addr = "127.0.0.1:0" }, "port between 1 and 65535"},
		{"no secret", func(c *Config) { c.SecretKey = "" }, "AccessKey and SecretKey"},
		{"empty bucket", func(c *Config) { c.Buckets = []string{"in", ""} }, "empty name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.change(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
	if d := (Config{}).WithDefaults(); d.Addr != DefaultAddr || d.Region != DefaultRegion {
		t.Errorf("WithDefaults() = %+v", d)
	}
}

func TestStopIsIdempotentAndDoneStaysOpen(t *testing.T) {
	select {
	case <-testServer.Done():
		t.Fatalf("shared server stopped: %v", testServer.Err())
	default:
	}
	if err := testServer.Err(); err != nil {
		t.Fatalf("Err() = %v while running", err)
	}
}
