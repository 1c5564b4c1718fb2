package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/spf13/cobra"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/s3event"
)

type putOptions struct {
	*globals
	key     string
	prefix  string
	wait    bool
	timeout time.Duration
}

func newPutCommand(g *globals) *cobra.Command {
	o := &putOptions{globals: g}
	cmd := &cobra.Command{
		Use:   "put FILE...",
		Short: "Upload files to the input bucket (and optionally wait for their results)",
		Long: `Upload files to the input bucket; each upload becomes a job. The key is the
file's base name, under --prefix if given, or exactly --key for one file.
Large files are uploaded in parts with a progress bar on stderr. With --wait,
put waits for every job to finish and prints where the results are; it exits
with 3 if a job ended dead.`,
		Example: `  conveyor put scan.pdf
  conveyor put *.csv --prefix batch-7/ --wait
  conveyor put big.bin --key datasets/big.bin --wait --timeout 1h`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runPut(cmd.Context(), o, args) },
	}
	f := cmd.Flags()
	f.StringVar(&o.key, "key", "", "object key (one file only)")
	f.StringVar(&o.prefix, "prefix", "", "key prefix, e.g. incoming/")
	f.BoolVarP(&o.wait, "wait", "w", false, "wait for the jobs and print their results")
	f.DurationVar(&o.timeout, "timeout", 30*time.Minute, "how long --wait waits")
	return cmd
}

// upload is one file to send: from disk (file) or from memory (data).
type upload struct {
	name string
	key  string
	file string
	data []byte
}

func runPut(ctx context.Context, o *putOptions, args []string) error {
	if o.key != "" && len(args) > 1 {
		return usageErrorf("--key names one object but %d files were given; use --prefix", len(args))
	}
	c, err := o.config()
	if err != nil {
		return err
	}
	var items []upload
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return usageErrorf("cannot read %s: %v", a, errors.Unwrap(err))
		}
		if st.IsDir() {
			return usageErrorf("%s is a directory; pass the files (e.g. %s/*)", a, a)
		}
		key := o.prefix + filepath.Base(a)
		if o.key != "" {
			key = o.key
		}
		items = append(items, upload{name: a, key: key, file: a})
	}
	cn, err := connect(ctx, c)
	if err != nil {
		return err
	}
	if o.wait {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	return putAndWait(ctx, cn, o.Out, o.Err, items, o.wait)
}

// putAndWait uploads items and, with wait, follows their jobs to the end.
func putAndWait(ctx context.Context, cn *conn, out, errw io.Writer, items []upload, wait bool) error {
	ids := make([]string, len(items))
	for i, it := range items {
		id, err := putOne(ctx, cn, errw, it)
		if err != nil {
			return err
		}
		ids[i] = id
		fmt.Fprintf(out, "uploaded s3://%s/%s  job %s\n", cn.cfg.Buckets.Input, job.Printable(it.key), id)
	}
	if !wait {
		return nil
	}
	dead := 0
	for i, id := range ids {
		rec, err := waitJob(ctx, cn, id)
		if err != nil {
			return fmt.Errorf("wait for job %s (%s): %w", id, job.Printable(items[i].key), err)
		}
		if rec.State == job.Dead {
			dead++
			fmt.Fprintf(out, "%s: dead after %d attempt(s): %s\n  log: conveyor logs %s\n", job.Printable(items[i].key), rec.Attempt, rec.Error, id)
			continue
		}
		if rec.State == job.Superseded {
			fmt.Fprintf(out, "%s: superseded (%s): a newer upload of the key has its own job\n", job.Printable(items[i].key), rec.Reason)
			continue
		}
		fmt.Fprintf(out, "%s: %s in %s\n", job.Printable(items[i].key), rec.State, time.Duration(rec.Timings.TotalMS)*time.Millisecond)
		for _, o := range rec.Outputs {
			fmt.Fprintf(out, "  s3://%s/%s  (%d bytes)\n", cn.cfg.Buckets.Output, job.Printable(o.Key), o.Size)
			if cn.Files != "" {
				// The embedded server stores objects as plain files.
				fmt.Fprintf(out, "    on disk: %s\n", job.Printable(filepath.Join(cn.Files, cn.cfg.Buckets.Output, filepath.FromSlash(o.Key))))
			}
		}
	}
	if len(ids) > 0 {
		fmt.Fprintf(out, "download with: conveyor get %s\n", ids[0])
	}
	if dead > 0 {
		return fmt.Errorf("%w: %d of %d jobs ended dead; see their logs", errJobDead, dead, len(ids))
	}
	return nil
}

func putOne(ctx context.Context, cn *conn, errw io.Writer, it upload) (string, error) {
	var body io.Reader
	var size int64
	if it.file != "" {
		f, err := os.Open(it.file)
		if err != nil {
			return "", err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return "", err
		}
		body, size = f, st.Size()
	} else {
		body, size = bytes.NewReader(it.data), int64(len(it.data))
	}
	var bar *progress
	if size >= progressThreshold {
		bar = newProgress(errw, path.Base(it.key), size)
		body = &countingReader{r: body, n: &bar.done}
		defer bar.finish()
	}
	up := manager.NewUploader(cn.S3, func(u *manager.Uploader) { u.PartSize = 16 << 20 })
	res, err := up.Upload(ctx, &s3.PutObjectInput{Bucket: &cn.cfg.Buckets.Input, Key: &it.key, Body: body})
	if err != nil {
		return "", fmt.Errorf("upload %s to s3://%s/%s: %w", it.name, cn.cfg.Buckets.Input, job.Printable(it.key), err)
	}
	etag := s3event.TrimETag(aws.ToString(res.ETag))
	return job.ID(cn.cfg.Buckets.Input, it.key, job.Revision(aws.ToString(res.VersionID), etag)), nil
}

// waitJob polls the job's record until it is finished.
func waitJob(ctx context.Context, cn *conn, id string) (*job.Record, error) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		rec, _, err := cn.Store.Get(ctx, id)
		if err == nil && rec.State.Terminal() {
			return rec, nil
		}
		select {
		case <-ctx.Done():
			if rec != nil {
				return rec, fmt.Errorf("still %s when the wait ended: %w", rec.State, ctx.Err())
			}
			return nil, fmt.Errorf("no job record appeared: %w", ctx.Err())
		case <-t.C:
		}
	}
}

const progressThreshold = 8 << 20

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// progress draws a one-line bar on a terminal-ish writer.
type progress struct {
	w     io.Writer
	name  string
	total int64
	done  atomic.Int64
	stop  chan struct{}
	ended chan struct{}
	start time.Time
}

func newProgress(w io.Writer, name string, total int64) *progress {
	p := &progress{w: w, name: name, total: total, stop: make(chan struct{}), ended: make(chan struct{}), start: time.Now()}
	go func() {
		defer close(p.ended)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				p.draw()
				fmt.Fprintln(p.w)
				return
			case <-t.C:
				p.draw()
			}
		}
	}()
	return p
}

func (p *progress) draw() {
	done := min(p.done.Load(), p.total)
	frac := float64(done) / float64(max(p.total, 1))
	const width = 30
	n := int(frac * width)
	rate := float64(done) / max(time.Since(p.start).Seconds(), 0.001) / (1 << 20)
	fmt.Fprintf(p.w, "\r%-20.20s [%s%s] %5.1f%% %7.1f MiB/s", p.name, strings.Repeat("#", n), strings.Repeat(".", width-n), frac*100, rate)
}

func (p *progress) finish() {
	close(p.stop)
	<-p.ended
}
