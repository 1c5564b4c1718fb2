package nats

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// ConnConfig says how to reach a NATS server or cluster.
type ConnConfig struct {
	// URL is one or more server URLs, comma-separated:
	// nats://host:4222, tls://host:4222.
	URL string
	// CredsFile is a NATS credentials file (a user JWT and its NKey
	// seed), as `nsc` writes it. It excludes User and Password.
	CredsFile string
	// User and Password authenticate with a user name and password.
	User, Password string
	// CAFile is a PEM file of the CAs that sign the servers' TLS
	// certificates; set, the connection requires TLS.
	CAFile string
	// Name is the client's name in the server's monitoring (the command
	// and host, say).
	Name string
}

// Validate names the first invalid field.
func (c ConnConfig) Validate() error {
	if strings.TrimSpace(c.URL) == "" {
		return errors.New("cluster.nats is empty: set it to embedded (conveyor up only) or to a server URL like nats://host:4222")
	}
	for _, u := range strings.Split(c.URL, ",") {
		p, err := url.Parse(strings.TrimSpace(u))
		if err != nil || p.Host == "" {
			return fmt.Errorf("cluster.nats %q is not a NATS URL; use one like nats://host:4222 (several separated by commas)", u)
		}
		switch p.Scheme {
		case "nats", "tls":
		default:
			return fmt.Errorf("cluster.nats %q: the scheme must be nats:// or tls://", u)
		}
		if p.User != nil {
			return errors.New("cluster.nats must not carry credentials in the URL (they would show in process lists and logs): use cluster.nats_user and cluster.nats_password, or cluster.nats_creds")
		}
	}
	if c.CredsFile != "" && (c.User != "" || c.Password != "") {
		return errors.New("set either cluster.nats_creds or cluster.nats_user and cluster.nats_password, not both")
	}
	if (c.User == "") != (c.Password == "") {
		return errors.New("cluster.nats_user and cluster.nats_password go together: set both or neither")
	}
	return nil
}

// Options are the nats.go options ConnConfig stands for.
func (c ConnConfig) Options() []natsgo.Option {
	opts := []natsgo.Option{
		natsgo.Name(c.Name),
		// A worker outlives a server's restart or a cluster's leader
		// change: it reconnects for as long as it runs.
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(250 * time.Millisecond),
		natsgo.Timeout(5 * time.Second),
	}
	if c.CredsFile != "" {
		opts = append(opts, natsgo.UserCredentials(c.CredsFile))
	}
	if c.User != "" {
		opts = append(opts, natsgo.UserInfo(c.User, c.Password))
	}
	if c.CAFile != "" {
		opts = append(opts, natsgo.RootCAs(c.CAFile))
	}
	return opts
}

// Connect connects to the server, retrying until ctx ends when none
// answers yet (a worker may start before its server). extra options
// come after c's (the embedded server's credentials, say).
func Connect(ctx context.Context, c ConnConfig, extra ...natsgo.Option) (*natsgo.Conn, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	for {
		nc, err := natsgo.Connect(c.URL, append(c.Options(), extra...)...)
		if err == nil {
			return nc, nil
		}
		if errors.Is(err, natsgo.ErrAuthorization) || errors.Is(err, natsgo.ErrAuthExpired) || strings.Contains(err.Error(), "tls") || strings.Contains(err.Error(), "x509") {
			return nil, fmt.Errorf("connect to NATS at %s: %w; check cluster.nats_user/nats_password, nats_creds or nats_ca", c.URL, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to NATS at %s: %w (is the server up and reachable from here?)", c.URL, err)
		case <-time.After(time.Second):
		}
	}
}
