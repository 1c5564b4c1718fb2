package cli

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
)

// completionTimeout bounds the look-up of job IDs behind a <TAB>: a shell
// that waits longer than this for a completion is worse than none.
// CONVEYOR_COMPLETION_TIMEOUT (a Go duration, "5s") sets another bound,
// for a store far away or a machine under load.
const completionTimeout = 2 * time.Second

// completionTimeoutEnv names the variable that overrides completionTimeout.
const completionTimeoutEnv = "CONVEYOR_COMPLETION_TIMEOUT"

func completionBound() time.Duration {
	if d, err := time.ParseDuration(os.Getenv(completionTimeoutEnv)); err == nil && d > 0 {
		return d
	}
	return completionTimeout
}

// completionLimit is how many recent jobs a <TAB> offers.
const completionLimit = 200

func newCompletionCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print the shell completion script",
		Long: `Print the script that lets the shell complete conveyor's commands, flags,
job IDs (get, logs, retry: the newest jobs of the running pipeline, read the
way 'conveyor jobs' reads them) and job states (jobs --state). Job IDs are
looked up for at most 2s (CONVEYOR_COMPLETION_TIMEOUT=5s sets another bound);
past that, or with no pipeline running, nothing is offered.

Load it for the current shell, or install it for every new one:
  bash:  source <(conveyor completion bash)
         conveyor completion bash > /etc/bash_completion.d/conveyor
  zsh:   conveyor completion zsh > "${fpath[1]}/_conveyor"   (compinit must be on)
  fish:  conveyor completion fish > ~/.config/fish/completions/conveyor.fish`,
		Example:   `  source <(conveyor completion bash)`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []cobra.Completion{"bash", "zsh", "fish"},
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(g.Out, true)
			case "zsh":
				return root.GenZshCompletion(g.Out)
			case "fish":
				return root.GenFishCompletion(g.Out, true)
			}
			return usageErrorf("%q is not a supported shell; use bash, zsh or fish", args[0])
		},
	}
}

// addCompletions teaches the commands of root what their arguments can be:
// job IDs for get, logs and retry, state names for jobs --state.
func addCompletions(g *globals, root *cobra.Command) {
	for _, c := range root.Commands() {
		switch c.Name() {
		case "get", "logs", "retry":
			c.ValidArgsFunction = g.completeJobIDs
		case "jobs":
			_ = c.RegisterFlagCompletionFunc("state", completeStates)
		}
	}
}

// completeJobIDs offers the IDs of the most recent jobs that start with
// toComplete, each described by its state and input key. Any failure (no
// pipeline running, a timeout, bad configuration) offers nothing and
// prints nothing: a completion never writes errors into the command line.
func (g *globals) completeJobIDs(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), completionBound())
	defer cancel()
	c, err := g.config()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	cn, err := connect(ctx, c)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	recs, err := cn.Store.Recent(ctx, jobstore.Query{Limit: completionLimit})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, r := range recs {
		if strings.HasPrefix(r.ID, toComplete) {
			// Printable: a key may hold tabs or newlines, which would
			// break the shell's list.
			out = append(out, cobra.CompletionWithDesc(r.ID, fmt.Sprintf("%s %s", r.State, job.Printable(r.Key))))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeStates offers the job states, in life order.
func completeStates(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	var out []cobra.Completion
	for _, s := range job.States {
		if strings.HasPrefix(string(s), toComplete) {
			out = append(out, string(s))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
