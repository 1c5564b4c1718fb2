package natsserver

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
)

// DefaultAddr is where the embedded server listens unless told.
const DefaultAddr = "127.0.0.1:4222"

// Config configures the embedded server.
type Config struct {
	// StoreDir holds JetStream's files (<data>/nats).
	StoreDir string
	// Addr is HOST:PORT to listen on (default DefaultAddr; port 0 picks
	// a free one).
	Addr string
	// User and Password are required of every client.
	User, Password string
}

// Server is a running embedded NATS server.
type Server struct {
	ns  *server.Server
	cfg Config
}

// Start starts the server and waits until it accepts clients.
func Start(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.User == "" || cfg.Password == "" {
		return nil, errors.New("the embedded NATS server needs a user and a password")
	}
	if !filepath.IsAbs(cfg.StoreDir) {
		return nil, fmt.Errorf("NATS store dir %q must be absolute", cfg.StoreDir)
	}
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("cluster.nats_addr %q is not HOST:PORT: %v", cfg.Addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return nil, fmt.Errorf("cluster.nats_addr %q: the port must be a number between 0 and 65535", cfg.Addr)
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o750); err != nil {
		return nil, fmt.Errorf("create NATS store dir: %w", err)
	}
	if p == 0 {
		p = server.RANDOM_PORT
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "conveyor",
		Host:       host,
		Port:       p,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		Username:   cfg.User,
		Password:   cfg.Password,
		NoSigs:     true,
		NoLog:      true,
		// No HTTP monitoring port: it would answer without credentials.
		HTTPPort: 0,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("the embedded NATS server did not listen on %s within 10s; is the port taken? set cluster.nats_addr to another one", cfg.Addr)
	}
	return &Server{ns: ns, cfg: cfg}, nil
}

// ClientURL is the URL clients connect to (nats://host:port).
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Options are the nats.go options that authenticate against s.
func (s *Server) Options() []natsgo.Option {
	return []natsgo.Option{natsgo.UserInfo(s.cfg.User, s.cfg.Password)}
}

// User and Password are the credentials clients authenticate with.
func (s *Server) User() string     { return s.cfg.User }
func (s *Server) Password() string { return s.cfg.Password }

// Shutdown stops the server and waits for it.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// Credentials are the embedded server's user and password, kept in the
// data dir.
type Credentials struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// EnsureCredentials reads the credentials stored at path, or generates
// and stores them (mode 0600) on first start.
func EnsureCredentials(path string) (Credentials, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		var c Credentials
		if err := json.Unmarshal(b, &c); err != nil || c.User == "" || c.Password == "" {
			return c, fmt.Errorf("%s is not valid NATS credentials; remove it to have new ones generated (workers then need the new password)", path)
		}
		return c, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return Credentials{}, err
	}
	var r [18]byte
	if _, err := rand.Read(r[:]); err != nil {
		return Credentials{}, err
	}
	c := Credentials{User: "conveyor", Password: hex.EncodeToString(r[:])}
	b, _ = json.MarshalIndent(c, "", "  ")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return c, fmt.Errorf("store NATS credentials: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return c, fmt.Errorf("store NATS credentials: %w", err)
	}
	return c, nil
}
