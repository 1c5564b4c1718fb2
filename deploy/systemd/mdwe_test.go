package systemd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cleanEnv is this process's environment without anything that would point
// conveyor elsewhere, plus extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONVEYOR_") && !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// TestUpUnderMemoryDenyWriteExecute: the unit sets
// MemoryDenyWriteExecute=yes, which conveyor (Go, no JIT) must survive.
// `conveyor up` runs here under the kernel's equivalent (PR_SET_MDWE),
// becomes ready, processes a job with the default processor, and stops
// cleanly. A probe first shows the restriction really holds.
func TestUpUnderMemoryDenyWriteExecute(t *testing.T) {
	probe := exec.Command(os.Args[0])
	probe.Env = cleanEnv(mdweProbe + "=1")
	out, err := probe.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 97 {
		t.Skipf("this kernel has no PR_SET_MDWE (Linux 6.3+): %s", out)
	}
	if err != nil {
		t.Fatalf("the probe shows no write-xor-execute restriction: %v\n%s", err, out)
	}

	// The restriction survives execve, so conveyor started through the
	// launcher runs under it.
	get := exec.Command(os.Args[0])
	get.Env = cleanEnv(mdweExec+"="+os.Args[0], mdweGet+"=1")
	if out, err := get.CombinedOutput(); err != nil {
		t.Fatalf("after execve: %v\n%s", err, out)
	}

	bin := buildConveyor(t)
	data := t.TempDir()
	sock := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	up := exec.Command(os.Args[0], "up", "--data-dir", data, "--s3-addr", fmt.Sprintf("127.0.0.1:%d", port), "--dashboard-addr", "off")
	up.Env = cleanEnv(mdweExec+"="+bin, "NOTIFY_SOCKET="+sock)
	up.Dir = t.TempDir()
	var upOut bytes.Buffer
	up.Stdout, up.Stderr = &upOut, &upOut
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- up.Wait() }()
	waited := false
	defer func() {
		if !waited {
			up.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("conveyor up output:\n%s", upOut.String())
		}
	}()

	next := func(what string) string {
		t.Helper()
		got := make(chan string, 1)
		go func() {
			buf := make([]byte, 4096)
			n, err := ln.Read(buf)
			if err != nil {
				got <- ""
				return
			}
			got <- string(buf[:n])
		}()
		select {
		case msg := <-got:
			return msg
		case err := <-exited:
			waited = true
			t.Fatalf("conveyor up under MDWE exited while waiting for %s: %v", what, err)
		case <-time.After(2 * time.Minute): // a failure bound, not a delay
			t.Fatalf("no %s from conveyor up under MDWE", what)
		}
		return ""
	}
	if msg := next("READY=1"); !strings.HasPrefix(msg, "READY=1") {
		t.Fatalf("first notification %q, want READY=1", msg)
	}

	input := filepath.Join(t.TempDir(), "hello.txt")
	if err := os.WriteFile(input, []byte("hello under MemoryDenyWriteExecute\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	put := exec.CommandContext(ctx, bin, "put", input, "--wait", "--data-dir", data)
	put.Env = cleanEnv()
	put.Dir = t.TempDir()
	if out, err := put.CombinedOutput(); err != nil {
		t.Fatalf("conveyor put --wait against up under MDWE: %v\n%s", err, out)
	}

	if err := up.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if msg := next("STOPPING=1"); !strings.HasPrefix(msg, "STOPPING=1") {
		t.Errorf("notification after SIGTERM %q, want STOPPING=1", msg)
	}
	select {
	case err := <-exited:
		waited = true
		if err != nil {
			t.Errorf("conveyor up under MDWE exited with %v after SIGTERM", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("conveyor up did not exit within a minute of SIGTERM")
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
