package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/spf13/cobra"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/local"
	"github.com/conveyorhq/conveyor/internal/s3server"
	"github.com/conveyorhq/conveyor/internal/snapshot"
	snaplocal "github.com/conveyorhq/conveyor/internal/snapshot/local"
	"github.com/conveyorhq/conveyor/internal/volume"
)

type snapshotOptions struct {
	*globals
	output         string
	quiesce        bool
	quiesceTimeout time.Duration
	to             string
	inPlace        bool
	buffered       bool
	policy         snapshot.Policy
	noProgress     bool
	dryRun         bool
	readSubset     string
	worker         string   // --stack restore: the worker given a new volume
	clone          bool     // --stack restore: a new volume for a new instance
	az             string   // --clone: its availability zone
	tags           []string // create --tag k=v, list --tag k=v|k
}

func newSnapshotCommand(g *globals) *cobra.Command {
	o := &snapshotOptions{globals: g}
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Take, list, restore, verify and prune snapshots of the volume",
		Long: `Snapshots of the worker's volume, incremental and deduplicated, stored in the
state bucket under snapshots/ (snapshot.bucket and snapshot.prefix change
where). With a running 'conveyor up' the commands go through its S3 server;
without one they open the data dir themselves (and keep 'conveyor up' from
starting meanwhile). 'conveyor up' takes snapshots on its own when
snapshot.every or snapshot.daily is set (off by default), applying the
retention policy (snapshot.retention) after each, and pruning once a day
(snapshot.prune_every) or once 10 snapshots were removed.

Snapshots are encrypted. Their key is wrapped by a password
(CONVEYOR_SNAPSHOT_PASSWORD or snapshot.password_file; generated in the
data dir when neither is set: keep a copy elsewhere) or, when
snapshot.kms_key is set, by that AWS KMS key. Without it no snapshot can
be read. 'conveyor snapshot key passwd' changes it (see 'key --help').

A snapshot is crash-consistent, like an EBS snapshot. --quiesce asks the
running 'conveyor up' (through the unix socket <data-dir>/control.sock,
mode 0600) to start no new job and waits up to --quiesce-timeout for the
running ones; the pipeline resumes when the snapshot is taken, or when this
command dies.`,
		Example: `  conveyor snapshot create --quiesce
  conveyor snapshot list
  conveyor snapshot restore latest --to /srv/clone/volume
  conveyor snapshot restore 20261126T030000Z-1a2b3c4d --in-place   # with conveyor up stopped
  conveyor --stack Conveyor snapshot list
  conveyor --stack Conveyor snapshot restore snap-0123456789abcdef0 --worker i-0123456789abcdef0
  conveyor --stack Conveyor snapshot restore snap-0123456789abcdef0 --clone --az eu-west-1b
  conveyor snapshot verify
  conveyor snapshot prune --keep-last 7
  conveyor snapshot delete 20261126T030000Z-1a2b3c4d
  conveyor snapshot repair
  CONVEYOR_SNAPSHOT_NEW_PASSWORD=... conveyor snapshot key passwd`,
	}
	cmd.PersistentFlags().StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	cmd.PersistentFlags().BoolVar(&o.noProgress, "no-progress", false, "print no progress on stderr")

	create := &cobra.Command{
		Use:   "create",
		Short: "Take a snapshot of the volume now",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runSnapshotCreate(cmd.Context(), o) },
	}
	create.Flags().BoolVar(&o.quiesce, "quiesce", false, "pause the running conveyor up's jobs while the snapshot is taken")
	create.Flags().DurationVar(&o.quiesceTimeout, "quiesce-timeout", 5*time.Minute, "how long --quiesce waits for running jobs")
	create.Flags().StringArrayVar(&o.tags, "tag", nil, "tag the snapshot: key=value (repeatable); prune --keep-tag keeps tagged ones")

	list := &cobra.Command{
		Use:   "list",
		Short: "List snapshots, oldest first: time, files, total size, size added",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runSnapshotList(cmd.Context(), o) },
	}
	list.Flags().StringArrayVar(&o.tags, "tag", nil, "only snapshots with this tag: key=value, or key for any value (repeatable: all must match)")
	restore := &cobra.Command{
		Use:   "restore ID",
		Short: "Restore a snapshot into a new directory (--to) or in place (--in-place)",
		Long: `Restore a snapshot ('latest', an ID or an unambiguous prefix of one). --to DIR
writes it to a new or empty directory: a volume for a new worker, with a new
volume ID of its own, so that it never passes for the original. --in-place
replaces the volume and keeps its ID; 'conveyor up' must be stopped. Every chunk's hash is
checked; a missing or damaged object is named.

With --stack NAME the snapshots are the workers' EBS snapshots (taken daily
by the stack's DLM policy; 'conveyor --stack NAME snapshot list' shows them
with their volume and worker). --worker INSTANCE-ID gives that worker a new
data volume made from the snapshot: a worker the group holds in service is
put in Standby, stopped (its running jobs are handed back), its old volume
detached and kept, the new one (encrypted, tagged as the old) attached at
/dev/sdf, and the worker started and returned to service; a worker stopped in
the warm pool stays stopped. --clone makes a new volume for a new instance
(--az, default the snapshot's volume's zone); the worker boot script gives it
a new volume identity at its first mount. See infra/README.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runSnapshotRestore(cmd.Context(), o, args[0]) },
	}
	restore.Flags().StringVar(&o.to, "to", "", "directory to restore into (new or empty)")
	restore.Flags().BoolVar(&o.inPlace, "in-place", false, "replace the volume (conveyor up must be stopped)")
	restore.Flags().BoolVar(&o.buffered, "buffered", false, "write through the page cache only (by default large files go straight to the disk)")
	restore.Flags().StringVar(&o.worker, "worker", "", "with --stack: give this worker instance a new data volume made from the EBS snapshot")
	restore.Flags().BoolVar(&o.clone, "clone", false, "with --stack: make a new volume from the EBS snapshot, for a new instance")
	restore.Flags().StringVar(&o.az, "az", "", "with --clone: the availability zone of the instance that will use it (default: the snapshot's volume's)")
	verify := &cobra.Command{
		Use:   "verify [ID]",
		Short: "Read back every object (or one snapshot's) and check every hash",
		Long: `Read back every pack (or those of one snapshot) and check every blob's hash,
that every file's chunks are indexed and every pack is there. With
--read-data-subset only part of the packs is read (the index, the trees and
the presence of every pack are still checked): n/m reads the n-th of m
groups, so that m runs, say one a night, read everything once; 5% or 0.05
reads that share, chosen at random.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			return runSnapshotVerify(cmd.Context(), o, id)
		},
	}
	verify.Flags().StringVar(&o.readSubset, "read-data-subset", "", "read only this part of the packs: n/m, a percentage (5%) or a fraction (0.05)")
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Apply the retention policy and delete data no snapshot references",
		Long: `Remove the snapshots the retention policy does not keep (snapshot.retention,
or the --keep-* flags, which replace it), then delete the data that no
remaining snapshot references. It waits for no one: while a snapshot is
being taken it fails with a message, and can be run again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runSnapshotPrune(cmd.Context(), o, cmd) },
	}
	f := prune.Flags()
	f.IntVar(&o.policy.KeepLast, "keep-last", 0, "keep the N newest snapshots")
	f.DurationVar(&o.policy.KeepWithin, "keep-within", 0, "keep the snapshots taken within this duration of the newest")
	f.IntVar(&o.policy.KeepHourly, "keep-hourly", 0, "keep the newest snapshot of each of the N newest hours")
	f.IntVar(&o.policy.KeepDaily, "keep-daily", 0, "keep the newest snapshot of each of the N newest days")
	f.IntVar(&o.policy.KeepWeekly, "keep-weekly", 0, "keep the newest snapshot of each of the N newest weeks")
	f.IntVar(&o.policy.KeepMonthly, "keep-monthly", 0, "keep the newest snapshot of each of the N newest months")
	f.IntVar(&o.policy.KeepYearly, "keep-yearly", 0, "keep the newest snapshot of each of the N newest years")
	f.StringArrayVar(&o.policy.KeepTags, "keep-tag", nil, "keep every snapshot with this tag: key=value, or key for any value (repeatable)")
	f.BoolVar(&o.dryRun, "dry-run", false, "print what would be removed and freed; delete nothing")
	cmd.AddCommand(create, list, restore, verify, prune, newSnapshotDeleteCommand(o), newSnapshotRepairCommand(o), newSnapshotKeyCommand(o))
	return cmd
}

// snapshotRepo is an opened repository and what to release after use.
type snapshotRepo struct {
	*snaplocal.Repo
	cfg   FileConfig
	close func()
}

// openSnapshots opens the repository: through the S3 endpoint configured,
// through the running `conveyor up`, or - when none runs - through an
// embedded server on the data dir, holding the data dir's lock meanwhile.
// stopped demands that no `conveyor up` runs.
func openSnapshots(ctx context.Context, o *snapshotOptions, stopped bool) (*snapshotRepo, error) {
	c, err := o.config()
	if err != nil {
		return nil, err
	}
	if err := c.snapshotValidate(); err != nil {
		return nil, err
	}
	sr := &snapshotRepo{cfg: c, close: func() {}}
	// As `conveyor up` does: the first command to create the repository
	// encrypts it, with a generated password when none is set.
	if err := c.ensureSnapshotPassword(o.Err); err != nil {
		return nil, err
	}
	cfg, err := c.snapshotRepoConfig()
	if err != nil {
		return nil, err
	}
	cfg.Logf = func(format string, args ...any) { fmt.Fprintf(o.Err, "conveyor: "+format+"\n", args...) }
	if c.S3.Endpoint != "" || os.Getenv("CONVEYOR_S3_USE_AWS") == "1" {
		if stopped {
			if err := checkStopped(c); err != nil {
				return nil, err
			}
		}
		cn, err := connect(ctx, c)
		if err != nil {
			return nil, err
		}
		sr.Repo, err = snaplocal.Open(ctx, cn.S3, cfg)
		return sr, err
	}
	paths := local.Paths{Root: c.DataDir}
	lock, err := tryLock(paths.Lock())
	if err != nil {
		return nil, err
	}
	if lock == nil {
		if stopped {
			return nil, fmt.Errorf("conveyor up is running on data dir %s; stop it first (restore in place replaces the volume it uses)", c.DataDir)
		}
		cn, err := connect(ctx, c)
		if err != nil {
			return nil, err
		}
		sr.Repo, err = snaplocal.Open(ctx, cn.S3, cfg)
		return sr, err
	}
	creds, err := local.LoadCredentials(paths)
	if err != nil {
		lock.Close()
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("data dir %s holds no conveyor data; start 'conveyor up --data-dir %s' once, or set s3.endpoint", c.DataDir, c.DataDir)
		}
		return nil, err
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		lock.Close()
		return nil, err
	}
	srv, err := s3server.Start(ctx, s3server.Config{DataDir: paths.S3Root(), Addr: addr, AccessKey: creds.AccessKeyID, SecretKey: creds.SecretAccessKey, Region: c.S3.Region, Buckets: []string{c.snapshotBucket()}})
	if err != nil {
		lock.Close()
		return nil, err
	}
	sr.close = func() {
		done := make(chan struct{})
		go func() { srv.Stop(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
		lock.Close()
	}
	client := s3server.NewClient(srv.Endpoint(), creds.AccessKeyID, creds.SecretAccessKey, c.S3.Region)
	sr.Repo, err = snaplocal.Open(ctx, snapshotStore(srv, client, cfg), cfg)
	if err != nil {
		sr.close()
	}
	return sr, err
}

// snapshotStore is how the snapshot engine reaches the state bucket in
// the process that runs the embedded server: in process (s3server.Direct:
// the same engine, without HTTP and SigV4 on both sides), unless the
// prefix holds names the server would store cleaned.
func snapshotStore(srv *s3server.Server, client *s3.Client, cfg snaplocal.Config) snaplocal.ObjectStore {
	if srv != nil && s3server.StoredAsIs(cfg.WithDefaults().Prefix+"config") {
		return srv.Direct()
	}
	return client
}

// tryLock takes the data dir's lock (as `conveyor up` does) without
// waiting; nil, nil when `conveyor up` holds it.
func tryLock(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

func checkStopped(c FileConfig) error {
	f, err := tryLock(local.Paths{Root: c.DataDir}.Lock())
	if err != nil {
		return err
	}
	if f == nil {
		return fmt.Errorf("conveyor up is running on data dir %s; stop it first", c.DataDir)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN) // released even if a child being started holds a copy
	f.Close()
	return nil
}

func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (o *snapshotOptions) checkOutput() error {
	if o.output != "table" && o.output != "json" {
		return usageErrorf("-o %q is not a format; use table or json", o.output)
	}
	return nil
}

func (o *snapshotOptions) printJSON(v any) error {
	enc := json.NewEncoder(o.Out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// progress prints one line on stderr, rewritten in place.
func (o *snapshotOptions) progress(verb string) (func(snapshot.Progress), func()) {
	if o.noProgress {
		return nil, func() {}
	}
	shown := false
	return func(p snapshot.Progress) {
			shown = true
			line := fmt.Sprintf("%s: %s", verb, humanBytes(p.Bytes))
			if p.TotalBytes > 0 {
				line += fmt.Sprintf(" of %s (%d%%)", humanBytes(p.TotalBytes), p.Bytes*100/max(p.TotalBytes, 1))
			}
			if p.Files > 0 {
				line += fmt.Sprintf(", %d files", p.Files)
			}
			if p.BytesAdded > 0 {
				line += fmt.Sprintf(", %s added", humanBytes(p.BytesAdded))
			}
			fmt.Fprintf(o.Err, "\r\033[K%s", line)
		}, func() {
			if shown {
				fmt.Fprintln(o.Err)
			}
		}
}

func runSnapshotCreate(ctx context.Context, o *snapshotOptions) error {
	if err := o.checkOutput(); err != nil {
		return err
	}
	var tags map[string]string
	for _, t := range o.tags {
		k, v, err := snapshot.ParseTag(t, false)
		if err != nil {
			return usageErrorf("--tag: %v", err)
		}
		if tags == nil {
			tags = map[string]string{}
		}
		tags[k] = v
	}
	r, err := openSnapshots(ctx, o, false)
	if err != nil {
		return err
	}
	defer r.close()
	if o.quiesce || r.cfg.Snapshot.Quiesce {
		resume, err := snapshot.RequestQuiesce(ctx, controlSocket(r.cfg), o.quiesceTimeout)
		if errors.Is(err, snapshot.ErrNoPipeline) && !o.quiesce {
			// Configured, not asked for: nothing runs, nothing to pause.
		} else if err != nil {
			return fmt.Errorf("quiesce: %w; is conveyor up running on data dir %s? Without --quiesce the snapshot is crash-consistent", err, r.cfg.DataDir)
		} else {
			defer resume()
			fmt.Fprintln(o.Err, "conveyor: pipeline paused: no job runs while the snapshot is taken")
		}
	}
	prog, done := o.progress("snapshot")
	s, err := r.Create(ctx, snapshot.CreateOptions{Progress: prog, Tags: tags})
	done()
	if err != nil {
		return err
	}
	if o.output == "json" {
		return o.printJSON(s)
	}
	fmt.Fprintf(o.Out, "snapshot %s: %d files, %s, %s added (%d files read)\n", s.ID, s.Stats.Files, humanBytes(s.Stats.Bytes), humanBytes(s.Stats.BytesAdded), s.Stats.FilesRead)
	return nil
}

func runSnapshotList(ctx context.Context, o *snapshotOptions) error {
	if err := o.checkOutput(); err != nil {
		return err
	}
	if c, err := o.config(); err != nil {
		return err
	} else if c.Stack != "" {
		return runSnapshotListAWS(ctx, o, c) // cmd_snapshot_aws.go
	}
	for _, t := range o.tags {
		if _, _, err := snapshot.ParseTag(t, true); err != nil {
			return usageErrorf("--tag: %v", err)
		}
	}
	r, err := openSnapshots(ctx, o, false)
	if err != nil {
		return err
	}
	defer r.close()
	all, err := r.List(ctx)
	if err != nil {
		return err
	}
	var list []snapshot.Snapshot
	for _, s := range all {
		if hasTags(s, o.tags) {
			list = append(list, s)
		}
	}
	if o.output == "json" {
		if list == nil {
			list = []snapshot.Snapshot{}
		}
		return o.printJSON(list)
	}
	return printSnapshots(o.Out, list)
}

// formatTags prints tags as k=v,k2=v2 in key order, "-" for none.
func formatTags(tags map[string]string) string {
	if len(tags) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(job.Printable(k + "=" + tags[k]))
	}
	return b.String()
}

// hasTags reports whether s has every tag rule ("k=v" or "k").
func hasTags(s snapshot.Snapshot, rules []string) bool {
	for _, r := range rules {
		if !snapshot.HasTag(s, r) {
			return false
		}
	}
	return true
}

func printSnapshots(w io.Writer, list []snapshot.Snapshot) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tFILES\tSIZE\tADDED\tTAGS")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", s.ID, s.Time.Local().Format("2006-01-02 15:04:05"), s.Stats.Files, humanBytes(s.Stats.Bytes), humanBytes(s.Stats.BytesAdded), formatTags(s.Tags))
	}
	return tw.Flush()
}

func runSnapshotRestore(ctx context.Context, o *snapshotOptions, id string) error {
	if c, err := o.config(); err != nil {
		return err
	} else if c.Stack != "" {
		if err := o.checkOutput(); err != nil {
			return err
		}
		return runSnapshotRestoreAWS(ctx, o, c, id) // cmd_snapshot_aws.go
	}
	if o.worker != "" || o.clone {
		return usageErrorf("--worker and --clone restore EBS snapshots: give --stack NAME")
	}
	if (o.to == "") == !o.inPlace {
		return usageErrorf("give exactly one of --to DIR or --in-place")
	}
	r, err := openSnapshots(ctx, o, o.inPlace)
	if err != nil {
		return err
	}
	defer r.close()
	opts := snapshot.RestoreOptions{InPlace: o.inPlace, Buffered: o.buffered}
	if o.to != "" {
		if opts.Target, err = filepath.Abs(o.to); err != nil {
			return err
		}
	}
	var done func()
	opts.Progress, done = o.progress("restore")
	err = r.Restore(ctx, id, opts)
	done()
	if err != nil {
		return err
	}
	if o.inPlace {
		fmt.Fprintf(o.Out, "restored %s into %s (in place)\n", id, r.cfg.volumePath())
		return nil
	}
	// A copy is another volume: with the original's identity, a worker on
	// the copy could pass for the original and take over its running jobs.
	vid, err := volume.Reidentify(opts.Target)
	if err != nil {
		return fmt.Errorf("restored %s into %s, but giving the copy a new volume ID failed: %w; remove %s before a worker uses it",
			id, opts.Target, err, filepath.Join(opts.Target, "volume-id"))
	}
	fmt.Fprintf(o.Out, "restored %s into %s (a new volume: %s)\n", id, opts.Target, vid)
	return nil
}

func runSnapshotVerify(ctx context.Context, o *snapshotOptions, id string) error {
	if err := o.checkOutput(); err != nil {
		return err
	}
	r, err := openSnapshots(ctx, o, false)
	if err != nil {
		return err
	}
	defer r.close()
	prog, done := o.progress("verify")
	rep, err := r.VerifyWith(ctx, id, snaplocal.VerifyOptions{Progress: prog, Subset: o.readSubset})
	done()
	if o.output == "json" && (err == nil || errors.Is(err, snapshot.ErrCorrupt)) {
		if rep.Problems == nil {
			rep.Problems = []string{}
		}
		if perr := o.printJSON(rep); perr != nil {
			return perr
		}
	}
	if err != nil {
		return fmt.Errorf("%w\nThe snapshots that use these objects cannot be fully restored; the others can ('conveyor snapshot verify ID' checks one)", err)
	}
	if o.output == "table" {
		fmt.Fprintf(o.Out, "verified %d snapshot(s): %d packs, %d blobs, %s read, no problem\n", rep.Snapshots, rep.Packs, rep.Blobs, humanBytes(rep.Bytes))
		if rep.PacksNotRead > 0 {
			fmt.Fprintf(o.Out, "(%d pack(s) outside the subset were checked present, not read)\n", rep.PacksNotRead)
		}
	}
	return nil
}

func runSnapshotPrune(ctx context.Context, o *snapshotOptions, cmd *cobra.Command) error {
	if err := o.checkOutput(); err != nil {
		return err
	}
	if err := o.policy.Validate(); err != nil {
		return usageErrorf("%v", err)
	}
	r, err := openSnapshots(ctx, o, false)
	if err != nil {
		return err
	}
	defer r.close()
	policy := r.cfg.snapshotPolicy()
	for _, n := range []string{"keep-last", "keep-within", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly", "keep-tag"} {
		if cmd.Flags().Changed(n) {
			policy = o.policy
			break
		}
	}
	rep, err := r.PruneWith(ctx, policy, snaplocal.PruneOptions{DryRun: o.dryRun})
	if err != nil {
		return err
	}
	if o.output == "json" {
		return o.printJSON(rep)
	}
	if o.dryRun {
		for _, s := range rep.Removed {
			fmt.Fprintf(o.Out, "would remove %s (%s)\n", s.ID, s.Time.Local().Format("2006-01-02 15:04:05"))
		}
		for _, s := range rep.Kept {
			fmt.Fprintf(o.Out, "would keep   %s (%s): %s\n", s.ID, s.Time.Local().Format("2006-01-02 15:04:05"), strings.Join(rep.Reasons[s.ID], ", "))
		}
		fmt.Fprintf(o.Out, "dry run: would keep %d snapshot(s), remove %d; delete %d pack(s), rewrite %d, free about %s; repository then about %s\n",
			len(rep.Kept), len(rep.Removed), rep.PacksDeleted, rep.PacksRepacked, humanBytes(rep.BytesFreed), humanBytes(rep.RepositoryBytes))
		return nil
	}
	fmt.Fprintf(o.Out, "kept %d snapshot(s), removed %d; deleted %d pack(s), rewrote %d, freed %s; repository now %s\n",
		len(rep.Kept), len(rep.Removed), rep.PacksDeleted, rep.PacksRepacked, humanBytes(rep.BytesFreed), humanBytes(rep.RepositoryBytes))
	return nil
}
