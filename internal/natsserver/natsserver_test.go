package natsserver_test

import (
	"os"
	"path/filepath"
	"testing"

	natsgo "github.com/nats-io/nats.go"

	"github.com/conveyorhq/conveyor/internal/natsserver"
)

// Credentials are generated once, kept 0600 and read back the same.
func TestEnsureCredentials(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "nats-credentials.json")
	c1, err := natsserver.EnsureCredentials(path)
	if err != nil {
		t.Fatal(err)
	}
	if c1.User == "" || len(c1.Password) < 32 {
		t.Fatalf("generated %+v: want a user and a long random password", c1)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", path, st.Mode().Perm())
	}
	c2, err := natsserver.EnsureCredentials(path)
	if err != nil || c2 != c1 {
		t.Fatalf("second EnsureCredentials = %+v, %v; want the stored %+v", c2, err, c1)
	}
	os.WriteFile(path, []byte("{}"), 0o600)
	if _, err := natsserver.EnsureCredentials(path); err == nil {
		t.Fatal("empty credentials accepted")
	}
}

// The server listens where told, on loopback here, and refuses a client
// without the password.
func TestServerRequiresCredentials(t *testing.T) {
	t.Parallel()
	s, err := natsserver.Start(natsserver.Config{StoreDir: filepath.Join(t.TempDir(), "nats"), Addr: "127.0.0.1:0", User: "conveyor", Password: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if _, err := natsgo.Connect(s.ClientURL(), natsgo.MaxReconnects(0)); err == nil {
		t.Fatal("a client without credentials was let in")
	}
	if _, err := natsgo.Connect(s.ClientURL(), natsgo.UserInfo("conveyor", "wrong"), natsgo.MaxReconnects(0)); err == nil {
		t.Fatal("a client with a wrong password was let in")
	}
	nc, err := natsgo.Connect(s.ClientURL(), s.Options()...)
	if err != nil {
		t.Fatalf("connect with the credentials: %v", err)
	}
	nc.Close()
	if _, err := natsserver.Start(natsserver.Config{StoreDir: t.TempDir(), Addr: "127.0.0.1:0"}); err == nil {
		t.Fatal("a server without credentials started")
	}
}
