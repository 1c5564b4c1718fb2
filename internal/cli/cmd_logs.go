package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/conveyorhq/conveyor/internal/volume"
)

type logsOptions struct {
	*globals
	follow bool
}

func newLogsCommand(g *globals) *cobra.Command {
	o := &logsOptions{globals: g}
	cmd := &cobra.Command{
		Use:   "logs JOB",
		Short: "Print a job's log (processor output and Conveyor's notes)",
		Long: `Print the log of a job from the worker's volume: every attempt's header,
the processor's stdout and stderr, and the outcome. With -f, keep printing
as the log grows until the job finishes.`,
		Example: `  conveyor logs 3f2a9c
  conveyor logs samples/hello.txt -f`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runLogs(cmd.Context(), o, args[0]) },
	}
	cmd.Flags().BoolVarP(&o.follow, "follow", "f", false, "follow the log until the job finishes")
	return cmd
}

func runLogs(ctx context.Context, o *logsOptions, arg string) error {
	c, cn, rec, err := o.job(ctx, arg)
	if err != nil {
		return err
	}
	vol, err := volume.Open(c.volumePath())
	if err != nil {
		return err
	}
	path, err := vol.LogPath(rec.ID)
	if err != nil {
		return err
	}
	var f *os.File
	for {
		f, err = os.Open(path)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrNotExist) || !o.follow {
			return fmt.Errorf("job %s (%s) has no log yet on %s", rec.ID, rec.State, vol.Root())
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return nil
		}
	}
	defer f.Close()
	for {
		if _, err := io.Copy(o.Out, f); err != nil {
			return err
		}
		if !o.follow {
			return nil
		}
		r, _, err := cn.Store.Get(ctx, rec.ID)
		if err == nil && r.State.Terminal() {
			_, err = io.Copy(o.Out, f)
			return err
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return nil
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
