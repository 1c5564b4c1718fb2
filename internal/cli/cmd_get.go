package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/spf13/cobra"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/s3event"
)

type getOptions struct {
	*globals
	to string
}

func newGetCommand(g *globals) *cobra.Command {
	o := &getOptions{globals: g}
	cmd := &cobra.Command{
		Use:   "get JOB|KEY",
		Short: "Download a job's results",
		Long: `Download the outputs of a job, named by its ID (or a unique ID prefix of at
least 6 characters) or by its input key, into a directory (default: the
current one). Files keep their names under the input key.`,
		Example: `  conveyor get 3f2a9c
  conveyor get samples/hello.txt --to results/`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runGet(cmd.Context(), o, args[0]) },
	}
	cmd.Flags().StringVar(&o.to, "to", ".", "directory to write the outputs into")
	return cmd
}

func runGet(ctx context.Context, o *getOptions, arg string) error {
	_, cn, rec, err := o.job(ctx, arg)
	if err != nil {
		return err
	}
	if rec.State != job.Succeeded {
		return fmt.Errorf("job %s is %s, it has no results; see 'conveyor logs %s'", rec.ID, rec.State, rec.ID)
	}
	for _, out := range rec.Outputs {
		rel, ok := job.OutputRel(rec.Key, out.Key)
		if !ok { // a record from before the escaped layout
			rel = strings.TrimPrefix(strings.TrimPrefix(out.Key, rec.Key+"/"), "_long/"+rec.ID+"/")
		}
		dst, err := safeJoin(o.to, rel)
		if err != nil {
			return err
		}
		n, err := download(ctx, cn.S3, cn.cfg.Buckets.Output, out.Key, rec, dst)
		if err != nil {
			return err
		}
		fmt.Fprintf(o.Out, "%s (%d bytes)\n", dst, n)
	}
	return nil
}

// download writes s3://bucket/key to dst, after checking that the object
// is the output of rec (its metadata names the job and input version): an
// output replaced by a newer version's job is refused, not passed off as
// this job's.
func download(ctx context.Context, client *s3.Client, bucket, key string, rec *job.Record, dst string) (int64, error) {
	obj, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return 0, fmt.Errorf("download s3://%s/%s: %w", bucket, key, err)
	}
	defer obj.Body.Close()
	if err := rec.CheckOutput("s3://"+bucket+"/"+key, obj.Metadata); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return 0, err
	}
	f, err := os.Create(dst)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, obj.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("download s3://%s/%s: %w", bucket, key, err)
	}
	return n, nil
}

// safeJoin joins a relative output path under dir, refusing anything that
// would land outside it.
func safeJoin(dir, rel string) (string, error) {
	p := filepath.Join(dir, filepath.FromSlash(rel))
	r, err := filepath.Rel(dir, p)
	if err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return "", fmt.Errorf("output %q would be written outside %s; download it with an S3 client instead", rel, dir)
	}
	return p, nil
}

// job loads the configuration, reaches the store and resolves a job
// argument: what every command about one job starts with.
func (g *globals) job(ctx context.Context, arg string) (FileConfig, *conn, *job.Record, error) {
	c, err := g.config()
	if err != nil {
		return c, nil, nil, err
	}
	cn, err := connect(ctx, c)
	if err != nil {
		return c, nil, nil, err
	}
	rec, err := findJob(ctx, cn, arg)
	return c, cn, rec, err
}

// findJob resolves a job ID, a unique ID prefix, or an input key (its
// newest job) to a record.
func findJob(ctx context.Context, cn *conn, arg string) (*job.Record, error) {
	if job.ValidID(arg) {
		rec, _, err := cn.Store.Get(ctx, arg)
		return rec, err
	}
	if len(arg) >= 6 && strings.Trim(arg, "0123456789abcdef") == "" {
		// A unique ID prefix: one listing under that prefix.
		match, err := cn.Store.WithIDPrefix(ctx, arg, 2)
		if err != nil {
			return nil, err
		}
		switch len(match) {
		case 1:
			rec, _, err := cn.Store.Get(ctx, match[0])
			return rec, err
		case 2:
			return nil, usageErrorf("job ID prefix %q matches more than one job; give more characters", arg)
		}
	}
	// An input key: the job of its current version, found from the
	// version itself (one HEAD), not by reading every record.
	head, err := cn.S3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &cn.cfg.Buckets.Input, Key: &arg})
	if err != nil {
		return nil, fmt.Errorf("%w: no job has ID %q, and s3://%s/%s cannot be read (%v); list the jobs with 'conveyor jobs'", jobstore.ErrNotFound, arg, cn.cfg.Buckets.Input, arg, err)
	}
	id := job.ID(cn.cfg.Buckets.Input, arg, job.Revision(aws.ToString(head.VersionId), s3event.TrimETag(aws.ToString(head.ETag))))
	rec, _, err := cn.Store.Get(ctx, id)
	if errors.Is(err, jobstore.ErrNotFound) {
		return nil, fmt.Errorf("%w: the current version of %q has no job yet (filtered out, or its event is still on its way); 'conveyor jobs' lists the jobs", jobstore.ErrNotFound, arg)
	}
	return rec, err
}
