package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/conveyorhq/conveyor/internal/processor"
	"github.com/conveyorhq/conveyor/internal/snapshot"
	"github.com/conveyorhq/conveyor/internal/worker"
)

// Exit codes, documented in `conveyor --help`.
const (
	ExitOK      = 0 // success
	ExitFailure = 1 // something failed; the message says what to do
	ExitUsage   = 2 // bad command line or configuration
	ExitJobDead = 3 // a job this command waited for or ran ended dead
)

// globals are the options every command shares.
type globals struct {
	configPath string
	dataDir    string
	stack      string
	Out, Err   io.Writer
	getenv     func(string) string
}

// Main runs the command line with os.Args and returns the exit code.
func Main() int {
	// Started as the limits shim of an external processor, this process
	// sets them and becomes the processor; it never returns.
	processor.HandleShim()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
}

// Run runs the command line with args; tests call it directly.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	g := &globals{Out: stdout, Err: stderr, getenv: getenv}
	root := newRootCommand(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	code, msg := explain(err)
	fmt.Fprintln(stderr, "conveyor: "+msg)
	return code
}

// explain turns an error into the exit code and the message a person reads.
func explain(err error) (int, string) {
	var ue usageError
	switch {
	case errors.As(err, &ue):
		return ExitUsage, ue.msg
	case errors.Is(err, worker.ErrDead):
		return ExitJobDead, err.Error()
	case errors.Is(err, errJobDead):
		return ExitJobDead, err.Error()
	case errors.Is(err, snapshot.ErrWrongKey):
		return ExitUsage, err.Error()
	case errors.Is(err, context.Canceled):
		return ExitFailure, "interrupted"
	}
	return ExitFailure, err.Error()
}

var errJobDead = errors.New("job dead")

func newRootCommand(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "conveyor",
		Short: "Asynchronous processing of uploaded files, on one machine or on AWS",
		Long: `Conveyor processes every file uploaded to its input bucket with a processor
and puts the results in its output bucket.

'conveyor up' runs the whole pipeline on this machine, with an embedded
S3-compatible server on 127.0.0.1: upload with any S3 client
(eval "$(conveyor env)"; aws s3 cp FILE s3://input/) or 'conveyor put'.

Exit codes:
  0  success
  1  failure (the message says what to do)
  2  bad command line or configuration
  3  a job ended dead (put --wait, worker run)`,
		Example: `  conveyor up --demo                # start, process the sample files, keep serving
  eval "$(conveyor env)"            # point the AWS CLI, boto3, rclone... at it
  conveyor put report.pdf --wait    # upload and wait for the result
  conveyor jobs --state dead        # what failed
  conveyor logs 3f2a... -f          # follow a job's log`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVarP(&g.configPath, "config", "c", "", "configuration file (default ./conveyor.yaml if present; env CONVEYOR_CONFIG)")
	root.PersistentFlags().StringVarP(&g.dataDir, "data-dir", "d", "", "data directory (default ./"+DefaultDataDir+"; env CONVEYOR_DATA_DIR)")
	root.PersistentFlags().StringVar(&g.stack, "stack", "", "an AWS stack whose outputs name the buckets (jobs, logs, get, retry, put against AWS; env CONVEYOR_STACK)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErrorf("%v; see '%s --help'", err, c.CommandPath())
	})
	root.AddCommand(
		newUpCommand(g),
		newEnvCommand(g),
		newPutCommand(g),
		newGetCommand(g),
		newJobsCommand(g),
		newLogsCommand(g),
		newRetryCommand(g),
		newWorkerCommand(g),
		newSnapshotCommand(g),
		newVersionCommand(g),
		newCompletionCommand(g),
	)
	// Ours replaces cobra's default completion command: documented, and
	// limited to the shells whose scripts are tested.
	root.CompletionOptions.DisableDefaultCmd = true
	addCompletions(g, root)
	return root
}

// config loads the configuration and applies the global flags.
func (g *globals) config() (FileConfig, error) {
	c, err := loadConfig(g.configPath, g.getenv)
	if err != nil {
		return c, err
	}
	if g.dataDir != "" {
		c.DataDir = g.dataDir
	}
	if g.stack != "" {
		c.Stack = g.stack
	}
	if err := absDataDir(&c); err != nil {
		return c, err
	}
	return c, c.validate()
}
