package processor

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestWithDefaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   Config
		want Config
	}{
		{"zero", Config{}, Config{Name: "report", Timeout: DefaultTimeout}},
		{"kept", Config{Name: "zstd", Timeout: time.Second}, Config{Name: "zstd", Timeout: time.Second}},
		{"command leaves name empty", Config{Command: []string{"/bin/true"}},
			Config{Command: []string{"/bin/true"}, Timeout: DefaultTimeout}},
		{"negative timeout kept for Validate", Config{Timeout: -1}, Config{Name: "report", Timeout: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, tt.in.WithDefaults()); diff != "" {
				t.Errorf("WithDefaults() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notExec := filepath.Join(dir, "notexec")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := writeScript(t, "exit 0\n")

	tests := []struct {
		name    string
		cfg     Config
		wantErr string // "" means valid; otherwise the exact message
	}{
		{"default", Config{}, ""},
		{"each builtin", Config{Name: "noop"}, ""},
		{"script", Config{Command: []string{script, "--flag"}}, ""},
		{"bare name on PATH", Config{Command: []string{"sh", "-c", "true"}}, ""},
		{"command ignores name", Config{Name: "bogus", Command: []string{script}}, ""},
		{"zero timeout", Config{Name: "noop"}.WithDefaults(), ""},
		{"negative timeout", Config{Timeout: -time.Second},
			"processor.timeout must be positive (got -1s)"},
		{"unknown builtin", Config{Name: "x"},
			`processor.name "x" is not a built-in; choose one of report, zstd, noop or set processor.command`},
		{"missing path", Config{Command: []string{"/x"}},
			`processor.command: "/x" not found; install it or fix the path`},
		{"missing bare name", Config{Command: []string{"conveyor-no-such-tool"}},
			`processor.command: "conveyor-no-such-tool" not found; install it or fix the path`},
		{"relative path", Config{Command: []string{"./proc.sh"}},
			`processor.command: "./proc.sh" is a relative path; use an absolute path or a bare name found on PATH`},
		{"not executable", Config{Command: []string{notExec}},
			`processor.command: "` + notExec + `" is not executable; chmod +x it or fix the path`},
		{"directory", Config{Command: []string{dir}},
			`processor.command: "` + dir + `" is a directory; point it at the executable`},
		{"empty executable", Config{Command: []string{""}},
			"processor.command: the executable (first element) is empty; set a path or a name on PATH"},
		{"env without =", Config{Command: []string{script}, Env: []string{"A=1", "FOO"}},
			`processor.env[1]: "FOO" is not KEY=VALUE`},
		{"env overriding the contract", Config{Command: []string{script}, Env: []string{"CONVEYOR_INPUT_KEY=x"}},
			"processor.env[0]: CONVEYOR_INPUT_KEY is set by Conveyor for every job; remove it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := tt.cfg
			if cfg.Timeout == 0 {
				cfg.Timeout = time.Minute
			}
			if cfg.Name == "" && len(cfg.Command) == 0 {
				cfg.Name = "report"
			}
			err := cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("Validate() = nil, want %q", tt.wantErr)
			case tt.wantErr != "" && err.Error() != tt.wantErr:
				t.Fatalf("Validate() = %q\nwant          %q", err, tt.wantErr)
			}
		})
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	for _, name := range Builtins() {
		p, err := New(Config{Name: name})
		if err != nil {
			t.Fatalf("New(%q): %v", name, err)
		}
		if p.Name() != name {
			t.Errorf("Name() = %q, want %q", p.Name(), name)
		}
	}
	p, err := New(Config{})
	if err != nil || p.Name() != "report" {
		t.Fatalf("New(Config{}) = %v, %v; want the report built-in", p, err)
	}

	_, err = New(Config{Command: []string{"/nonexistent/conveyor-proc"}})
	if err == nil || !strings.Contains(err.Error(), `"/nonexistent/conveyor-proc" not found; install it or fix the path`) {
		t.Fatalf("New with a missing command: %v", err)
	}
	if _, err := New(Config{Timeout: -1}); err == nil || !strings.HasPrefix(err.Error(), "processor.timeout must be positive") {
		t.Fatalf("New with a negative timeout: %v", err)
	}
	// New reports configuration errors, not run-time conditions.
	if errors.Is(err, ErrNotFound) {
		t.Fatal("New wraps ErrNotFound; it is a Run error")
	}
}
