package eventsource

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// startNATS runs a NATS server in process on a loopback port (port 0: any).
func startNATS(t testing.TB, port int) *server.Server {
	t.Helper()
	if port == 0 {
		port = server.RANDOM_PORT
	}
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

func publish(t *testing.T, url, subject string, body []byte) {
	t.Helper()
	c, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Publish(subject, body); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
}

func receive(t *testing.T, ch <-chan []byte, what string) []byte {
	t.Helper()
	select {
	case b := <-ch:
		return b
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: nothing received", what)
		return nil
	}
}

func TestNATSDeliversBodies(t *testing.T) {
	t.Parallel()
	s := startNATS(t, 0)
	got := make(chan []byte, 10)
	n, err := SubscribeNATS(s.ClientURL(), "store.events", nil, func(b []byte) { got <- b }, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	body := sample(t, "versitygw-nats.json")
	publish(t, s.ClientURL(), "store.events", []byte("other subject"))
	publish(t, s.ClientURL(), "store.other", []byte("other subject"))
	publish(t, s.ClientURL(), "store.events", body)
	if b := receive(t, got, "first"); string(b) != "other subject" {
		t.Fatalf("got %q first", b)
	}
	if b := receive(t, got, "second"); string(b) != string(body) {
		t.Fatalf("got %q, want the published event", b)
	}
	n.Stop()
	n.Stop() // twice is safe
	publish(t, s.ClientURL(), "store.events", body)
	select {
	case b := <-got:
		t.Fatalf("received %q after Stop (or from another subject)", b)
	case <-time.After(200 * time.Millisecond):
	}
}

// A server restart drops the connection; the subscription comes back by
// itself and later messages arrive again.
func TestNATSReconnects(t *testing.T) {
	t.Parallel()
	s := startNATS(t, 0)
	port := s.Addr().(*net.TCPAddr).Port
	reconnected := make(chan struct{}, 1)
	logf := func(format string, args ...any) {
		t.Logf(format, args...)
		if strings.Contains(format, "reconnected") {
			reconnected <- struct{}{}
		}
	}
	got := make(chan []byte, 10)
	n, err := SubscribeNATS(s.ClientURL(), "store.events", []nats.Option{nats.ReconnectWait(20 * time.Millisecond)}, func(b []byte) { got <- b }, logf)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	s.Shutdown()
	s.WaitForShutdown()
	s2 := startNATS(t, port)
	select {
	case <-reconnected:
	case <-time.After(30 * time.Second):
		t.Fatal("no reconnect")
	}
	publish(t, s2.ClientURL(), "store.events", []byte("after restart"))
	if b := receive(t, got, "after restart"); string(b) != "after restart" {
		t.Fatalf("got %q", b)
	}
}

func TestSubscribeNATSErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ url, subject, want string }{
		{"", "x", "no NATS URL"},
		{"nats://127.0.0.1:1", "", "subject"},
		{"nats://127.0.0.1:1", "a b", "subject"},
		{"nats://user:pw@127.0.0.1:1", "x", "nats://***@127.0.0.1:1"},
	} {
		_, err := SubscribeNATS(tt.url, tt.subject, []nats.Option{nats.Timeout(time.Second)}, func([]byte) {}, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "pw@") {
			t.Errorf("SubscribeNATS(%q, %q) = %v, want an error saying %q without the password", tt.url, tt.subject, err, tt.want)
		}
	}
}

// A server that requires credentials refuses a subscriber without the
// right ones, with a message that says what to check, and takes the
// right ones given as options.
func TestNATSCredentials(t *testing.T) {
	t.Parallel()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		Username: "conveyor", Password: "nats-password-0123"})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	defer s.Shutdown()
	url := s.ClientURL()
	for _, opts := range [][]nats.Option{nil, {nats.UserInfo("conveyor", "wrong")}} {
		_, err := SubscribeNATS(url, "store.events", opts, func([]byte) {}, nil)
		if err == nil || !strings.Contains(err.Error(), "check the URL and the credentials") {
			t.Errorf("subscribe with %d options: %v, want a refusal saying what to check", len(opts), err)
		}
	}
	got := make(chan []byte, 1)
	n, err := SubscribeNATS(url, "store.events", []nats.Option{nats.UserInfo("conveyor", "nats-password-0123")}, func(b []byte) { got <- b }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	c, err := nats.Connect(url, nats.UserInfo("conveyor", "nats-password-0123"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Publish("store.events", []byte("ok")); err != nil {
		t.Fatal(err)
	}
	c.Flush()
	if b := receive(t, got, "with credentials"); string(b) != "ok" {
		t.Fatalf("got %q", b)
	}
}
