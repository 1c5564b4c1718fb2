package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/conveyorhq/conveyor/internal/worker"
)

type retryOptions struct {
	*globals
	attempts int
}

func newRetryCommand(g *globals) *cobra.Command {
	o := &retryOptions{globals: g}
	cmd := &cobra.Command{
		Use:   "retry JOB|KEY",
		Short: "Put a dead (or succeeded) job back in the queue",
		Long: `Put a finished job back in the queue with more attempts: a dead one whose
cause you fixed, or a succeeded one to process again. A superseded job is
not retried: a newer version of its input has its own job.

The job becomes queued and marked active; the reconciler dispatches it at
its next pass (within reconcile.interval with 'conveyor up'; within 15
minutes on AWS, where the reconciler function runs on a schedule).

Exit codes: 0 queued, 1 the job cannot be retried (the message says why),
2 bad command line.`,
		Example: `  conveyor retry 3f2a9c
  conveyor --stack Conveyor retry scans/broken.pdf --attempts 1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runRetry(cmd.Context(), o, args[0]) },
	}
	cmd.Flags().IntVar(&o.attempts, "attempts", 3, "attempts the job gets from now on")
	return cmd
}

func runRetry(ctx context.Context, o *retryOptions, arg string) error {
	if o.attempts < 1 || o.attempts > 100 {
		return usageErrorf("--attempts must be between 1 and 100, got %d", o.attempts)
	}
	_, cn, rec, err := o.job(ctx, arg)
	if err != nil {
		return err
	}
	got, err := worker.Retry(ctx, cn.Store, rec.ID, o.attempts)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "job %s queued again (%d more attempt(s), was %s); the reconciler dispatches it at its next pass\n", got.ID, got.MaxAttempts-got.Attempt, rec.State)
	return nil
}
