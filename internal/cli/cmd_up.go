package cli

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/conveyorhq/conveyor/internal/dashboard"
	"github.com/conveyorhq/conveyor/internal/local"
	"github.com/conveyorhq/conveyor/internal/metrics"
	"github.com/conveyorhq/conveyor/internal/sdnotify"
	"github.com/conveyorhq/conveyor/samples"
)

type upOptions struct {
	*globals
	s3Addr    string
	workers   int
	processor string
	demo      bool
	dashAddr  string
	nats      string
	// workersSet: --workers was given (0 is a value with --nats).
	workersSet bool
}

func newUpCommand(g *globals) *cobra.Command {
	o := &upOptions{globals: g}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the whole pipeline on this machine until Ctrl-C",
		Long: `Run the whole pipeline in this process: the embedded S3-compatible server on
loopback (buckets input, output, state), the object-created hook, the
orchestrator, the local workers and the reconciler. Credentials are generated
on first start and stored (mode 0600) in the data dir; 'conveyor env' prints
them for other S3 clients. A dashboard (jobs, logs, outputs, uploads, retries)
is served on http://127.0.0.1:9001/ unless --dashboard-addr says otherwise; on
a non-loopback address it requires the token printed at start. Stop with Ctrl-C: jobs interrupted mid-way are
resumed at the next start.

Prometheus metrics are at the dashboard's /metrics (or metrics.addr);
notify.webhooks receive every job state change, signed.

With --nats (cluster.nats) jobs go through a NATS JetStream work queue that
'conveyor worker serve' on other machines share: 'embedded' runs a NATS
server in this process (127.0.0.1:4222 unless cluster.nats_addr says
otherwise; user and password generated into the data dir), a URL uses an
existing NATS cluster. '--workers 0' then coordinates without running jobs.`,
		Example: `  conveyor up --demo
  conveyor up --nats embedded --workers 0
  conveyor up --data-dir /srv/conveyor --s3-addr 127.0.0.1:9100 --workers 4
  CONVEYOR_PROCESSOR=zstd conveyor up`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.workersSet = cmd.Flags().Changed("workers")
			return runUp(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.s3Addr, "s3-addr", "", "S3 listen address HOST:PORT (default "+DefaultS3Addr+"; env CONVEYOR_S3_ADDR)")
	f.IntVar(&o.workers, "workers", 0, "jobs run at once (default: number of CPUs; env CONVEYOR_WORKERS)")
	f.StringVar(&o.processor, "processor", "", "built-in processor: report, zstd or noop (env CONVEYOR_PROCESSOR)")
	f.BoolVar(&o.demo, "demo", false, "upload the sample files after start and show their results")
	f.StringVar(&o.nats, "nats", "", "dispatch through NATS JetStream so that 'conveyor worker serve' on other machines share the jobs: embedded (run a NATS server here) or nats://HOST:4222 (env CONVEYOR_CLUSTER_NATS)")
	f.StringVar(&o.dashAddr, "dashboard-addr", "", "dashboard listen address HOST:PORT, or off (default "+DefaultDashboardAddr+"; env CONVEYOR_DASHBOARD_ADDR); a non-loopback address requires a token, printed at start")
	return cmd
}

func runUp(ctx context.Context, o *upOptions) error {
	tuneGC()
	c, err := o.config()
	if err != nil {
		return err
	}
	notify, err := sdnotify.New(o.getenv)
	if err != nil {
		return usageErrorf("%v", err)
	}
	if o.s3Addr != "" {
		if c.externalMode() {
			return usageErrorf("--s3-addr is where the embedded S3 server listens, and with s3.endpoint (%s) none runs: drop --s3-addr, or s3.endpoint to use the embedded server", c.S3.Endpoint)
		}
		c.S3.Addr = o.s3Addr
	}
	if o.workers != 0 || o.workersSet {
		c.Workers = o.workers
	}
	if o.nats != "" {
		c.Cluster.NATS = o.nats
	}
	if o.processor != "" {
		c.Processor.Name, c.Processor.Command, c.Processor.Bundle = o.processor, nil, ""
	}
	if err := c.validate(); err != nil {
		return err
	}
	if err := c.validateComponents(); err != nil {
		return err
	}
	if err := c.validateNotifications(); err != nil { // notify.go
		return err
	}
	if err := c.validateCluster(true); err != nil {
		return err
	}
	if host, _, err := net.SplitHostPort(c.S3.Addr); err == nil && !isLoopback(host) && !c.externalMode() {
		fmt.Fprintf(o.Err, "conveyor: warning: S3 listens on %s, reachable from other machines; credentials are required, but traffic is plain HTTP\n", c.S3.Addr)
	}
	// Before the pipeline starts: a bundle whose setup fails takes no job.
	vers, err := c.prepareProcessor(ctx, o.Err)
	if err != nil {
		return err
	}
	pc := c.pipelineConfig()
	pc.Worker.ConfigVersion, pc.Worker.ProcessorVersion = vers.Config, vers.Processor
	pc.Log = o.Err
	pc.NATS = c.upNATSConfig()
	if pc.NATS != nil && pc.NATS.Embedded && !isLoopback(hostOf(pc.NATS.Addr)) {
		fmt.Fprintf(o.Err, "conveyor: warning: NATS listens on %s, reachable from other machines; it requires the user and password in %s, but traffic is plain TCP: keep it on a private network or put a NATS cluster with TLS in front\n", pc.NATS.Addr, local.Paths{Root: c.DataDir}.NATSCredentials())
	}
	if o.dashAddr != "" {
		c.Dashboard.Addr = o.dashAddr
	}
	if pc.Dashboard, err = dashboardConfig(c); err != nil {
		return err
	}
	if pc.Dashboard != nil && !dashboard.IsLoopback(pc.Dashboard.Addr) {
		fmt.Fprintf(o.Err, "conveyor: warning: the dashboard listens on %s, reachable from other machines; it requires the token in the URL printed below, but traffic is plain HTTP\n", pc.Dashboard.Addr)
	}
	// Prometheus metrics (at the dashboard's /metrics, or metrics.addr)
	// and webhooks: see up_observers.go.
	pc.Metrics = metrics.New()
	if pc.Webhooks, err = c.notifier(o.Err); err != nil {
		return err
	}
	// Snapshots are encrypted by default: a password exists before the
	// first one is taken.
	if err := c.ensureSnapshotPassword(o.Err); err != nil {
		return err
	}
	panel := &snapshotPanel{cfg: c, runs: newSnapshotRuns(c)}
	pc.Snapshots = panel
	// s3.endpoint set: the buckets are in a store of the user's own.
	if pc.External, pc.Events, err = c.upStore(ctx, o.Err); err != nil { // notify.go
		return err
	}
	p, err := local.Start(ctx, pc)
	if err != nil {
		return err
	}
	defer p.Stop()
	panel.pipe.Store(p)
	ms, err := c.metricsServer(p.Metrics())
	if err != nil {
		return err
	}
	if ms != nil {
		defer ms.Stop()
	}
	stopSnapshots, err := startSnapshotSchedule(ctx, o.globals, c, p, panel.runs)
	if err != nil {
		return err
	}
	defer stopSnapshots()
	proc := c.Processor.Name
	if len(c.Processor.Command) > 0 {
		proc = strings.Join(c.Processor.Command, " ")
	}
	if c.Processor.Bundle != "" {
		proc = "bundle " + c.Processor.Bundle + " (" + vers.Processor + ")"
	}
	fmt.Fprintf(o.Out, `conveyor is up
  S3 endpoint  %s  (buckets %s, %s, %s)
  data dir     %s
  volume       %s
  processor    %s, %s
%s%sUpload with:                     conveyor put FILE --wait   or   aws s3 cp FILE s3://%s/
Stop with Ctrl-C.
`, p.Endpoint(), c.Buckets.Input, c.Buckets.Output, c.Buckets.State, c.DataDir, p.Paths.Volume(), proc, workersNote(c.Workers), dashboardLine(p)+metricsLine(p, ms, pc.Webhooks)+natsLines(p, c), storeBanner(c, p), c.Buckets.Input)

	// Under systemd (Type=notify) the unit becomes active only now, when
	// the S3 endpoint answers and the workers run.
	if err := notify.Ready(fmt.Sprintf("serving S3 on %s, %d worker(s)", p.Endpoint(), c.Workers)); err != nil {
		fmt.Fprintf(o.Err, "conveyor: warning: %v\n", err)
	}
	defer notify.Stopping("stopping; handing unfinished jobs back")

	if o.demo {
		if err := runDemo(ctx, o, c); err != nil {
			return err
		}
	}
	select {
	case <-ctx.Done():
		fmt.Fprintln(o.Out, "conveyor: stopping; unfinished jobs resume at the next start")
		return nil
	case <-p.Done():
		return fmt.Errorf("the embedded S3 server stopped: %v", p.Server.Err())
	}
}

// runDemo uploads the embedded sample files through the same path as
// `conveyor put --wait`.
func runDemo(ctx context.Context, o *upOptions, c FileConfig) error {
	cn, err := connect(ctx, c)
	if err != nil {
		return err
	}
	var items []upload
	err = fs.WalkDir(samples.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := samples.FS.ReadFile(p)
		if err != nil {
			return err
		}
		items = append(items, upload{name: p, key: path.Join("samples", p), data: b})
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "\ndemo: uploading %d sample files to s3://%s/samples/\n", len(items), c.Buckets.Input)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return putAndWait(ctx, cn, o.Out, o.Err, items, true)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// dashboardConfig maps dashboard.addr and dashboard.token onto the
// dashboard's configuration; nil when it is off.
func dashboardConfig(c FileConfig) (*dashboard.Config, error) {
	addr := strings.TrimSpace(c.Dashboard.Addr)
	if addr == "" || strings.EqualFold(addr, "off") {
		return nil, nil
	}
	dc := dashboard.Config{
		Addr:  addr,
		Token: c.Dashboard.Token,
		// Two `conveyor up` on one machine (other data dirs, other S3
		// ports) should not fail over the default dashboard port.
		FallbackPort: addr == DefaultDashboardAddr,
	}.WithDefaults()
	if err := dc.Validate(); err != nil {
		return nil, usageErrorf("%v (or set dashboard.addr to off)", err)
	}
	return &dc, nil
}

// dashboardLine is the banner's dashboard line, empty when it is off.
func dashboardLine(p *local.Pipeline) string {
	if p.Dashboard == nil {
		return ""
	}
	line := fmt.Sprintf("  dashboard    %s", p.Dashboard.URL())
	if p.Dashboard.Token() != "" {
		line += "  (token required: open this exact URL)"
	}
	return line + "\n"
}

// upGCPercent and upMemoryLimit tune the collector of `conveyor up`, whose
// live heap is small (tens of MB) but which allocates fast under load
// (every S3 request of a user's upload): at Go's default (GOGC=100) the
// collector ran several times a second and took a large share of the CPU.
// A higher percentage lets the heap grow to a few times the live one, and
// the soft limit makes the collector work harder again well before the
// process grows large. GOGC and GOMEMLIMIT in the environment win.
const (
	upGCPercent   = 400
	upMemoryLimit = 256 << 20
)

func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(upGCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(upMemoryLimit)
	}
}
