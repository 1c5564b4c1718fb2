package sdnotify_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/sdnotify"
)

// listen plays systemd's side: a unix datagram socket that collects what
// the service sends.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen on %s: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	// A failure bound, not a delay: the datagram is already queued when
	// Notify returns.
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read notification: %v", err)
	}
	return string(buf[:n])
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestReadyAndStoppingReachAPathSocket(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "notify")
	c := listen(t, path)
	n, err := sdnotify.New(env(map[string]string{sdnotify.EnvSocket: path}))
	if err != nil {
		t.Fatal(err)
	}
	if !n.Enabled() {
		t.Fatal("a notifier with NOTIFY_SOCKET set says it is disabled")
	}
	if err := n.Ready("serving on 127.0.0.1:9000\nsecond line"); err != nil {
		t.Fatal(err)
	}
	if got, want := receive(t, c), "READY=1\nSTATUS=serving on 127.0.0.1:9000 second line\n"; got != want {
		t.Errorf("ready datagram = %q, want %q", got, want)
	}
	if err := n.Stopping("stopping"); err != nil {
		t.Fatal(err)
	}
	if got, want := receive(t, c), "STOPPING=1\nSTATUS=stopping\n"; got != want {
		t.Errorf("stopping datagram = %q, want %q", got, want)
	}
}

func TestAbstractSocket(t *testing.T) {
	t.Parallel()
	name := fmt.Sprintf("@conveyor-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	c := listen(t, name)
	if got := c.LocalAddr().String(); got != name {
		t.Fatalf("listener bound %q, want the abstract name %q", got, name)
	}
	n, err := sdnotify.New(env(map[string]string{sdnotify.EnvSocket: name}))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Notify("READY=1"); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, c); got != "READY=1\n" {
		t.Errorf("datagram = %q", got)
	}
	// The abstract name is not a file: nothing was created on disk.
	if _, err := os.Stat(name); !os.IsNotExist(err) {
		t.Errorf("a file %q exists (err %v): the '@' name was taken as a path", name, err)
	}
}

func TestUnsetSendsNothing(t *testing.T) {
	t.Parallel()
	n, err := sdnotify.New(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if n.Enabled() {
		t.Error("enabled without NOTIFY_SOCKET")
	}
	if err := n.Ready("x"); err != nil {
		t.Errorf("Ready without a socket: %v", err)
	}
	var nilN *sdnotify.Notifier
	if err := nilN.Stopping("x"); err != nil {
		t.Errorf("Stopping on nil: %v", err)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	if _, err := sdnotify.New(env(map[string]string{sdnotify.EnvSocket: "vsock:2:1234"})); err == nil || !strings.Contains(err.Error(), "unset it") {
		t.Errorf("vsock address: err = %v, want a refusal that says what to do", err)
	}
	gone := filepath.Join(t.TempDir(), "nobody-listens")
	n, err := sdnotify.New(env(map[string]string{sdnotify.EnvSocket: gone}))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Ready("x"); err == nil {
		t.Error("Ready to a socket nobody listens on returned nil")
	}
	path := filepath.Join(t.TempDir(), "notify")
	listen(t, path)
	n, _ = sdnotify.New(env(map[string]string{sdnotify.EnvSocket: path}))
	if err := n.Notify("READY=1\nMAINPID=1"); err == nil {
		t.Error("an assignment with a newline was sent")
	}
}
