package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/spf13/cobra"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/s3event"
)

type jobsOptions struct {
	*globals
	state  string
	key    string
	watch  bool
	output string
	limit  int
}

func newJobsCommand(g *globals) *cobra.Command {
	o := &jobsOptions{globals: g}
	cmd := &cobra.Command{
		Use:   "jobs",
		Short: "List jobs, newest first",
		Long: `List job records, most recently changed first: ID, state, attempts, input
size, age and input key. --state filters (queued, running, retrying,
succeeded, dead, superseded); --key lists the jobs of the input keys under a
prefix; --watch redraws every second; -o json prints the records for
scripts. The list comes from the job index: it reads the jobs in flight and
the newest finished ones, never the whole history (--limit 0 pages through
all that is kept).`,
		Example: `  conveyor jobs
  conveyor jobs --state dead --limit 200
  conveyor jobs --key invoices/2026-12/
  conveyor jobs -o json | jq '.[].outputs'
  conveyor jobs --watch`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runJobs(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.state, "state", "", "only jobs in this state")
	f.BoolVarP(&o.watch, "watch", "w", false, "redraw every second until Ctrl-C")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	f.StringVar(&o.key, "key", "", "only jobs of input keys starting with this prefix")
	f.IntVar(&o.limit, "limit", 50, "show at most this many jobs (0: all that are kept)")
	return cmd
}

func runJobs(ctx context.Context, o *jobsOptions) error {
	if o.state != "" && !job.State(o.state).Valid() {
		return usageErrorf("--state %q is not a state; use one of %s", o.state, stateNames())
	}
	if o.output != "table" && o.output != "json" {
		return usageErrorf("-o %q is not a format; use table or json", o.output)
	}
	c, err := o.config()
	if err != nil {
		return err
	}
	cn, err := connect(ctx, c)
	if err != nil {
		return err
	}
	for {
		recs, err := queryJobs(ctx, cn, o)
		if err != nil {
			return err
		}
		if o.watch {
			fmt.Fprint(o.Out, "\033[H\033[2J") // clear the screen
		}
		if o.output == "json" {
			enc := json.NewEncoder(o.Out)
			enc.SetIndent("", "  ")
			if recs == nil {
				recs = []*job.Record{}
			}
			if err := enc.Encode(recs); err != nil {
				return err
			}
		} else {
			printJobs(o.Out, recs, time.Now())
		}
		if !o.watch {
			return nil
		}
		if sleepCtx(ctx, time.Second) != nil {
			return nil
		}
	}
}

// queryJobs asks the index, or with --key the input bucket's listing of
// that prefix: what it reads follows the answer, not the history.
func queryJobs(ctx context.Context, cn *conn, o *jobsOptions) ([]*job.Record, error) {
	q := jobstore.Query{Limit: o.limit}
	if o.state != "" {
		q.States = []job.State{job.State(o.state)}
	}
	if o.key == "" {
		return cn.Store.Recent(ctx, q)
	}
	var ids []string
	bucket := cn.cfg.Buckets.Input
	p := s3.NewListObjectVersionsPaginator(cn.S3, &s3.ListObjectVersionsInput{Bucket: &bucket, Prefix: &o.key})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list s3://%s/%s: %w", bucket, job.Printable(o.key), err)
		}
		for _, v := range page.Versions {
			ids = append(ids, job.ID(bucket, aws.ToString(v.Key), job.Revision(aws.ToString(v.VersionId), s3event.TrimETag(aws.ToString(v.ETag)))))
		}
	}
	recs, err := cn.Store.GetMany(ctx, ids)
	if err != nil {
		return nil, err
	}
	return filterJobs(recs, job.State(o.state), o.limit), nil
}

func filterJobs(recs []*job.Record, state job.State, limit int) []*job.Record {
	var out []*job.Record
	for _, r := range recs {
		if state == "" || r.State == state {
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].UpdatedAt.After(out[j].UpdatedAt) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

func printJobs(w io.Writer, recs []*job.Record, now time.Time) {
	counts := map[job.State]int{}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tATTEMPTS\tSIZE\tAGE\tKEY")
	for _, r := range recs {
		counts[r.State]++
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\t%s\n", r.ID, r.State, r.Attempt, r.MaxAttempts, humanBytes(r.Size), now.Sub(r.CreatedAt).Round(time.Second), job.Printable(r.Key))
	}
	tw.Flush()
	var parts []string
	for _, s := range job.States {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	if len(parts) == 0 {
		parts = []string{"no jobs"}
	}
	fmt.Fprintln(w, strings.Join(parts, ", "))
}

// printableKey shows control characters in keys escaped, so a hostile key
// cannot rewrite the terminal.

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func stateNames() string {
	var s []string
	for _, st := range job.States {
		s = append(s, string(st))
	}
	return strings.Join(s, ", ")
}
