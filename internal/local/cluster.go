package local

import (
	"context"
	"path/filepath"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	natsdispatch "github.com/conveyorhq/conveyor/internal/dispatch/nats"
	"github.com/conveyorhq/conveyor/internal/natsserver"
	"github.com/conveyorhq/conveyor/internal/natsworker"
	"github.com/conveyorhq/conveyor/internal/worker"
)

// NATS is the data dir's embedded NATS server store.
func (p Paths) NATS() string { return filepath.Join(p.Root, "nats") }

// NATSCredentials is the embedded NATS server's user and password file
// (mode 0600).
func (p Paths) NATSCredentials() string { return filepath.Join(p.Root, "nats-credentials.json") }

// NATSConfig makes `conveyor up` dispatch through NATS JetStream, so that
// `conveyor worker serve` on other machines share its jobs.
type NATSConfig struct {
	// Embedded runs a NATS server in this process (store <data>/nats,
	// credentials <data>/nats-credentials.json) listening on Addr
	// (default 127.0.0.1:4222); otherwise Conn reaches an existing one.
	Embedded bool
	Addr     string
	Conn     natsdispatch.ConnConfig
	Stream   natsdispatch.StreamConfig
}

// NATSInfo says how to reach the pipeline's NATS server: for other
// components of this process (an event receiver on a subject, say) and
// for the banner. Conn is the pipeline's own connection; do not close it.
type NATSInfo struct {
	URL     string
	Options []natsgo.Option // the credentials (and TLS) to connect with
	Conn    *natsgo.Conn
	Stream  natsdispatch.StreamConfig
	// CredentialsFile is where the embedded server's user and password
	// are stored; "" for an external server.
	CredentialsFile string
}

// NATS returns how to reach the pipeline's NATS server; ok is false when
// the pipeline dispatches in process.
func (p *Pipeline) NATS() (info NATSInfo, ok bool) {
	if p.nats == nil {
		return NATSInfo{}, false
	}
	return p.nats.info, true
}

// natsParts are the pieces `conveyor up --nats` runs.
type natsParts struct {
	server   *natsserver.Server // nil for an external server
	info     NATSInfo
	js       jetstream.JetStream
	consumer *natsworker.Consumer // nil with Workers 0
}

// startNATS starts the embedded server (or connects to the external one)
// and makes sure the stream exists.
func (p *Pipeline) startNATS(ctx context.Context, cfg NATSConfig) (*natsParts, error) {
	np := &natsParts{}
	cc := cfg.Conn
	var extra []natsgo.Option
	if cfg.Embedded {
		creds, err := natsserver.EnsureCredentials(p.Paths.NATSCredentials())
		if err != nil {
			return nil, err
		}
		if np.server, err = natsserver.Start(natsserver.Config{StoreDir: p.Paths.NATS(), Addr: cfg.Addr, User: creds.User, Password: creds.Password}); err != nil {
			return nil, err
		}
		cc = natsdispatch.ConnConfig{URL: np.server.ClientURL(), Name: "conveyor up"}
		extra = np.server.Options()
		np.info.CredentialsFile = p.Paths.NATSCredentials()
	} else {
		extra = cc.Options()
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nc, err := natsdispatch.Connect(cctx, cc, extra...)
	if err != nil {
		np.close()
		return nil, err
	}
	np.info.URL, np.info.Conn, np.info.Stream = cc.URL, nc, cfg.Stream.WithDefaults()
	if cfg.Embedded {
		np.info.Options = extra
	} else {
		np.info.Options = cc.Options()
	}
	if np.js, err = jetstream.New(nc); err != nil {
		np.close()
		return nil, err
	}
	return np, nil
}

// startConsumer runs this process's share of the jobs from the stream.
func (np *natsParts) startConsumer(ctx context.Context, slots int, lease time.Duration, run natsworker.RunFunc, logf func(string, ...any)) error {
	if lease == 0 {
		lease = worker.DefaultLease
	}
	c, err := natsworker.New(np.js, natsworker.Config{Stream: np.info.Stream, Slots: slots, Lease: lease, Logf: logf}, run)
	if err != nil {
		return err
	}
	if err := c.Start(ctx); err != nil {
		return err
	}
	np.consumer = c
	return nil
}

// stopConsumer hands the running jobs back; it needs the S3 server up.
func (np *natsParts) stopConsumer() {
	if np != nil && np.consumer != nil {
		np.consumer.Stop()
	}
}

func (np *natsParts) close() {
	if np == nil {
		return
	}
	if np.info.Conn != nil {
		np.info.Conn.Close()
	}
	if np.server != nil {
		np.server.Shutdown()
	}
}

// noQuiesce is the quiescer of a pipeline that runs no job itself.
type noQuiesce struct{}

func (noQuiesce) Pause()                         {}
func (noQuiesce) Resume()                        {}
func (noQuiesce) WaitIdle(context.Context) error { return nil }
