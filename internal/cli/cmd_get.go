package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/spf13/cobra"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
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
	c, cn, rec, err := o.job(ctx, arg)
	if err != nil {
		return err
	}
	if rec.State != job.Succeeded {
		return fmt.Errorf("job %s is %s, it has no results yet; see 'conveyor logs %s'", rec.ID, rec.State, rec.ID)
	}
	down := manager.NewDownloader(cn.S3)
	for _, out := range rec.Outputs {
		rel := strings.TrimPrefix(out.Key, rec.Key+"/")
		if rel == out.Key { // a long key's outputs live under _long/<id>/
			rel = strings.TrimPrefix(out.Key, "_long/"+rec.ID+"/")
		}
		dst, err := safeJoin(o.to, rel)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		f, err := os.Create(dst)
		if err != nil {
			return err
		}
		n, err := down.Download(ctx, f, &s3.GetObjectInput{Bucket: &c.Buckets.Output, Key: aws.String(out.Key)})
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("download s3://%s/%s: %w", c.Buckets.Output, out.Key, err)
		}
		fmt.Fprintf(o.Out, "%s (%d bytes)\n", dst, n)
	}
	return nil
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
	isHex := len(arg) >= 6 && strings.Trim(arg, "0123456789abcdef") == ""
	var match []string
	err := cn.Store.IDs(ctx, func(id string) error {
		if isHex && strings.HasPrefix(id, arg) {
			match = append(match, id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	switch {
	case len(match) == 1:
		rec, _, err := cn.Store.Get(ctx, match[0])
		return rec, err
	case len(match) > 1:
		return nil, usageErrorf("job ID prefix %q matches %d jobs; give more characters", arg, len(match))
	}
	// An input key: the newest job for it.
	recs, err := cn.Store.List(ctx)
	if err != nil {
		return nil, err
	}
	var best *job.Record
	for _, r := range recs {
		if r.Key == arg && (best == nil || r.CreatedAt.After(best.CreatedAt)) {
			best = r
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%w: no job has ID or input key %q; list them with 'conveyor jobs'", jobstore.ErrNotFound, arg)
	}
	return best, nil
}
