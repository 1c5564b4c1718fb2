package cli

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	natsdispatch "github.com/conveyorhq/conveyor/internal/dispatch/nats"
	"github.com/conveyorhq/conveyor/internal/local"
	"github.com/conveyorhq/conveyor/internal/natsserver"
)

// natsEmbedded is the cluster.nats value that makes `conveyor up` run
// its own NATS server.
const natsEmbedded = "embedded"

// natsConnectTimeout bounds the first connection to a NATS server.
const natsConnectTimeout = 30 * time.Second

// natsStreamConfig maps cluster.nats_stream, _subject and _replicas.
func (c FileConfig) natsStreamConfig() natsdispatch.StreamConfig {
	return natsdispatch.StreamConfig{Stream: c.Cluster.NATSStream, Subject: c.Cluster.NATSSubject, Replicas: c.Cluster.NATSReplicas}.WithDefaults()
}

// natsConnConfig maps cluster.nats and its credentials onto the client's
// configuration; name says who connects, for the server's monitoring.
func (c FileConfig) natsConnConfig(name string) natsdispatch.ConnConfig {
	host, _ := os.Hostname()
	return natsdispatch.ConnConfig{
		URL: strings.TrimSpace(c.Cluster.NATS), CredsFile: c.Cluster.NATSCreds,
		User: c.Cluster.NATSUser, Password: c.Cluster.NATSPassword, CAFile: c.Cluster.NATSCA,
		Name: name + "@" + host,
	}
}

// validateCluster checks the cluster settings; embedded says whether
// "embedded" is allowed (conveyor up) or not (worker serve).
func (c FileConfig) validateCluster(embedded bool) error {
	v := strings.TrimSpace(c.Cluster.NATS)
	if v == "" {
		return nil
	}
	if err := c.natsStreamConfig().Validate(); err != nil {
		return usageErrorf("%v", err)
	}
	if v == natsEmbedded {
		if !embedded {
			return usageErrorf("cluster.nats: embedded is for conveyor up; a worker connects to the URL that conveyor up printed, like --nats nats://HOST:4222")
		}
		return nil
	}
	if err := c.natsConnConfig("").Validate(); err != nil {
		return usageErrorf("%v", err)
	}
	return nil
}

// connectNATS connects to cluster.nats and returns the connection and
// its JetStream client.
func connectNATS(ctx context.Context, cc natsdispatch.ConnConfig, extra ...natsgo.Option) (*natsgo.Conn, jetstream.JetStream, error) {
	ctx, cancel := context.WithTimeout(ctx, natsConnectTimeout)
	defer cancel()
	nc, err := natsdispatch.Connect(ctx, cc, extra...)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("JetStream client: %w", err)
	}
	return nc, js, nil
}

// upNATSConfig maps cluster.nats onto `conveyor up`'s; nil when off.
func (c FileConfig) upNATSConfig() *local.NATSConfig {
	v := strings.TrimSpace(c.Cluster.NATS)
	switch v {
	case "":
		return nil
	case natsEmbedded:
		addr := c.Cluster.NATSAddr
		if addr == "" {
			addr = natsserver.DefaultAddr
		}
		return &local.NATSConfig{Embedded: true, Addr: addr, Stream: c.natsStreamConfig()}
	}
	return &local.NATSConfig{Conn: c.natsConnConfig("conveyor up"), Stream: c.natsStreamConfig()}
}

// natsLines is the banner's part on NATS: what a `worker serve` on
// another machine is started with. The password is not printed: it is
// in a file of the data dir, as the S3 credentials are.
func natsLines(p *local.Pipeline, c FileConfig) string {
	info, ok := p.NATS()
	if !ok {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "  NATS         %s  (stream %s, subjects %s)\n", info.URL, info.Stream.Stream, info.Stream.Filter())
	if info.CredentialsFile != "" {
		fmt.Fprintf(&b, "               user and password in %s (mode 0600)\n", info.CredentialsFile)
	}
	s3 := p.Endpoint()
	fmt.Fprintf(&b, "Workers on other machines:        CONVEYOR_CLUSTER_NATS_USER=... CONVEYOR_CLUSTER_NATS_PASSWORD=... \\\n")
	fmt.Fprintf(&b, "                                  CONVEYOR_S3_ENDPOINT=%s CONVEYOR_S3_ACCESS_KEY_ID=... CONVEYOR_S3_SECRET_ACCESS_KEY=... \\\n", s3)
	fmt.Fprintf(&b, "                                  conveyor worker serve --nats %s\n", info.URL)
	if isLoopback(hostOf(strings.TrimPrefix(strings.TrimPrefix(s3, "http://"), "https://"))) || isLoopback(hostOf(strings.TrimPrefix(info.URL, "nats://"))) {
		b.WriteString("                                  (loopback only: for other machines, listen on their network with --s3-addr and cluster.nats_addr)\n")
	}
	return b.String()
}

// hostOf is the host of HOST:PORT, or the whole string.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// natsLocalCredentials fills in the embedded server's user and password
// from the data dir when none is configured and a `conveyor up
// --nats embedded` keeps them there (a worker on the same machine). Only
// for servers on loopback: a URL naming another host never receives them.
func (c *FileConfig) natsLocalCredentials() {
	if c.Cluster.NATSUser != "" || c.Cluster.NATSCreds != "" {
		return
	}
	for _, u := range strings.Split(c.Cluster.NATS, ",") {
		parsed, err := url.Parse(strings.TrimSpace(u))
		if err != nil || !isLoopback(parsed.Hostname()) {
			return
		}
	}
	path := local.Paths{Root: c.DataDir}.NATSCredentials()
	if _, err := os.Stat(filepath.Clean(path)); err != nil {
		return
	}
	if creds, err := natsserver.EnsureCredentials(path); err == nil {
		c.Cluster.NATSUser, c.Cluster.NATSPassword = creds.User, creds.Password
	}
}

// workersNote is the banner's account of up's own workers.
func workersNote(n int) string {
	if n == 0 {
		return "no worker here (coordinating only: jobs run on 'worker serve')"
	}
	return fmt.Sprintf("%d worker(s)", n)
}
