package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestEnvExternalStore: with s3.endpoint, `conveyor env` points clients
// at that store (no data dir credentials needed, none invented), and
// `up --s3-addr`, which has no server to place, is refused.
func TestEnvExternalStore(t *testing.T) {
	t.Parallel()
	run := func(args []string, env map[string]string) (int, string, string) {
		env["CONVEYOR_DATA_DIR"] = t.TempDir()
		var out, errb bytes.Buffer
		code := Run(context.Background(), args, &out, &errb, func(k string) string { return env[k] })
		return code, out.String(), errb.String()
	}
	code, out, errs := run([]string{"env"}, map[string]string{
		"CONVEYOR_S3_ENDPOINT": "https://s3.example.com:9000", "CONVEYOR_S3_REGION": "eu-west-3",
		"CONVEYOR_S3_ACCESS_KEY_ID": "AKIDSTORE", "CONVEYOR_S3_SECRET_ACCESS_KEY": "it's secret", "CONVEYOR_S3_CA_FILE": "/etc/ca.pem",
	})
	for _, want := range []string{
		"export AWS_ENDPOINT_URL=https://s3.example.com:9000\n", "export AWS_ACCESS_KEY_ID=AKIDSTORE\n",
		`export AWS_SECRET_ACCESS_KEY='it'\''s secret'` + "\n", "export AWS_REGION=eu-west-3\n", "export AWS_CA_BUNDLE=/etc/ca.pem\n",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("env on an external store = exit %d, %q (stderr %q); want it to contain %q", code, out, errs, want)
		}
	}

	// Without keys in the configuration, none is printed: the AWS chain
	// the user has applies to their clients as to conveyor.
	code, out, _ = run([]string{"env"}, map[string]string{"CONVEYOR_S3_ENDPOINT": "http://127.0.0.1:7070"})
	if code != 0 || !strings.Contains(out, "export AWS_ENDPOINT_URL=http://127.0.0.1:7070\n") || strings.Contains(out, "AWS_ACCESS_KEY_ID=") {
		t.Errorf("env without configured keys = exit %d, %q", code, out)
	}

	code, _, errs = run([]string{"up", "--s3-addr", "127.0.0.1:9100"}, map[string]string{"CONVEYOR_S3_ENDPOINT": "http://127.0.0.1:7070"})
	if code != ExitUsage || !strings.Contains(errs, "--s3-addr") || !strings.Contains(errs, "s3.endpoint") {
		t.Errorf("up --s3-addr with s3.endpoint = exit %d, %q; want a usage error naming both", code, errs)
	}
}
