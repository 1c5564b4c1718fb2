package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

// complete runs cobra's hidden __complete command, which the generated
// shell scripts call on <TAB>, and returns the offered words (descriptions
// cut) and its stderr.
func complete(t *testing.T, args ...string) ([]string, string) {
	t.Helper()
	// The look-up of job IDs gives up after 2s, which a loaded CI
	// machine (e2e tests in parallel on 2 cores) can take to start the
	// binary and list: the test is of what is offered, not of the bound.
	stdout, stderr, code := runCLIEnv(t, []string{"CONVEYOR_COMPLETION_TIMEOUT=60s"}, append([]string{"__complete"}, args...)...)
	if code != 0 {
		t.Fatalf("conveyor __complete %q: exit %d, stderr %s", args, code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], ":") {
		t.Fatalf("conveyor __complete %q: no directive line in %q", args, stdout)
	}
	var words []string
	for _, l := range lines[:len(lines)-1] {
		w, _, _ := strings.Cut(l, "\t")
		words = append(words, w)
	}
	// cobra always reports the directive on stderr; the shell scripts
	// discard it. Anything else there would be an error leaking out.
	var rest []string
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if l != "" && !strings.HasPrefix(l, "Completion ended with directive:") {
			rest = append(rest, l)
		}
	}
	return words, strings.Join(rest, "\n")
}

// bashCompletionLib is the bash-completion package's library, which
// cobra's bash script relies on (_get_comp_words_by_ref), as on a user's
// machine. Required where CI installs it.
func bashCompletionLib(t *testing.T) string {
	t.Helper()
	const lib = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(lib); err != nil {
		if os.Getenv("CONVEYOR_REQUIRE_SANDBOX") == "1" || os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing: apt-get install bash-completion (.ci/run installs it)", lib)
		}
		t.Skipf("%s is missing: apt-get install bash-completion to run this test", lib)
	}
	return lib
}

// TestCompletionScriptsLoad: each generated script is accepted by its
// shell; bash, always installed, must register the completion function.
func TestCompletionScriptsLoad(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bash := exec.CommandContext(ctx, "bash", "--norc", "--noprofile", "-c",
		`set -e; source <("$CONVEYOR_BIN" completion bash); complete -p conveyor`)
	bash.Env = cleanEnv("CONVEYOR_BIN=" + conveyorBin)
	out, err := bash.CombinedOutput()
	if err != nil {
		t.Fatalf("bash could not load the script: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "__start_conveyor") || !strings.HasSuffix(strings.TrimSpace(string(out)), " conveyor") {
		t.Errorf("complete -p conveyor = %q, want the script's __start_conveyor function", out)
	}
	// The other shells, where installed, at least parse their script.
	for _, sh := range []struct{ name, check string }{
		{"zsh", `autoload -U compinit; compinit -u; source <("$CONVEYOR_BIN" completion zsh); whence -w _conveyor`},
		{"fish", `"$CONVEYOR_BIN" completion fish | source; complete -c conveyor | head -1`},
	} {
		if _, err := exec.LookPath(sh.name); err != nil {
			t.Logf("%s not installed: its script is generated but not loaded", sh.name)
			stdout, stderr, code := runCLI(t, "completion", sh.name)
			if code != 0 || !strings.Contains(stdout, "conveyor") {
				t.Errorf("conveyor completion %s: exit %d, %d bytes, stderr %s", sh.name, code, len(stdout), stderr)
			}
			continue
		}
		c := exec.CommandContext(ctx, sh.name, "-c", sh.check)
		c.Env = cleanEnv("CONVEYOR_BIN="+conveyorBin, "HOME="+t.TempDir())
		if out, err := c.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) == 0 {
			t.Errorf("%s could not load the script: %v\n%s", sh.name, err, out)
		}
	}
	if _, stderr, code := runCLI(t, "completion", "tcsh"); code != 2 || !strings.Contains(stderr, "bash, zsh or fish") {
		t.Errorf("completion tcsh: exit %d, stderr %q", code, stderr)
	}
}

// TestCompletionOffersJobIDsAndStates: against a running `up`, get, logs
// and retry complete the IDs of its jobs (and a prefix narrows them); jobs
// --state completes the state names; with nothing running, the completion
// offers nothing and prints no error.
func TestCompletionOffersJobIDsAndStates(t *testing.T) {
	t.Parallel()
	states, _ := complete(t, "jobs", "--state", "")
	var want []string
	for _, s := range job.States {
		want = append(want, string(s))
	}
	if strings.Join(states, " ") != strings.Join(want, " ") {
		t.Errorf("jobs --state <TAB> = %q, want %q", states, want)
	}
	if got, _ := complete(t, "jobs", "--state", "su"); strings.Join(got, " ") != "succeeded superseded" {
		t.Errorf("jobs --state su<TAB> = %q", got)
	}

	empty := t.TempDir()
	got, stderr := complete(t, "get", "--data-dir", empty, "")
	if len(got) != 0 || stderr != "" {
		t.Errorf("with no up running: offered %q, stderr %q; want nothing", got, stderr)
	}

	p := startUp(t, upOptions{})
	ids := map[string]bool{}
	for _, k := range []string{"a.txt", "b.txt", "weird\tkey.txt"} {
		id := put(t, p.S3, "complete/"+k, []byte("content of "+k+"\n"))
		waitState(t, p.S3, id, job.Succeeded, jobTimeout)
		ids[id] = true
	}
	for _, cmd := range []string{"get", "logs", "retry"} {
		got, stderr := complete(t, cmd, "--data-dir", p.DataDir, "")
		if len(got) != len(ids) || stderr != "" {
			t.Errorf("%s <TAB> = %q (stderr %q), want the %d job IDs", cmd, got, stderr, len(ids))
		}
		for _, id := range got {
			if !ids[id] {
				t.Errorf("%s <TAB> offered %q, not a job of this pipeline", cmd, id)
			}
		}
	}
	var one string
	for id := range ids {
		one = id
		break
	}
	if got, _ := complete(t, "logs", "--data-dir", p.DataDir, one[:8]); len(got) != 1 || got[0] != one {
		t.Errorf("logs %s<TAB> = %q, want [%s]", one[:8], got, one)
	}
	// A second argument is never completed.
	if got, _ := complete(t, "get", "--data-dir", p.DataDir, one, ""); len(got) != 0 {
		t.Errorf("get ID <TAB> = %q, want nothing", got)
	}

	// And through the real bash script, as a user's <TAB> runs it.
	script := filepath.Join(t.TempDir(), "conveyor.bash")
	stdout, _, code := runCLI(t, "completion", "bash")
	if code != 0 {
		t.Fatalf("completion bash: exit %d", code)
	}
	if err := os.WriteFile(script, []byte(stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bash := exec.CommandContext(ctx, "bash", "--norc", "--noprofile", "-c", `
source "$LIB"
source "$SCRIPT"
COMP_WORDS=(conveyor logs --data-dir "$DATA" "$PREFIX")
COMP_CWORD=4
COMP_LINE="conveyor logs --data-dir $DATA $PREFIX"
COMP_POINT=${#COMP_LINE}
__start_conveyor conveyor "$PREFIX" "$DATA"
printf '%s\n' "${COMPREPLY[@]}"`)
	bash.Env = cleanEnv("LIB="+bashCompletionLib(t), "SCRIPT="+script, "DATA="+p.DataDir, "PREFIX="+one[:8], "PATH="+filepath.Dir(conveyorBin)+":"+os.Getenv("PATH"), "CONVEYOR_COMPLETION_TIMEOUT=60s")
	// stdout only: outside an interactive <TAB>, bash's compopt complains
	// on stderr that no completion is executing.
	var berr strings.Builder
	bash.Stderr = &berr
	out, err := bash.Output()
	if err != nil {
		t.Fatalf("bash completion: %v\n%s%s", err, out, berr.String())
	}
	if strings.TrimSpace(string(out)) != one {
		t.Errorf("bash <TAB> on 'conveyor logs %s' = %q, want %s", one[:8], out, one)
	}
}
