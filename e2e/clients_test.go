package e2e

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conveyorhq/conveyor/internal/job"
)

// The S3 tools people already use work against `conveyor up` as they are,
// configured only from `conveyor env`: each uploads a file, the pipeline
// processes it, and the same tool downloads the result.
func TestOtherS3Clients(t *testing.T) {
	t.Parallel()
	up := startUp(t, upOptions{})
	stdout, stderr, code := runCLI(t, "env", "--data-dir", up.DataDir)
	if code != 0 {
		t.Fatalf("conveyor env: exit %d: %s", code, stderr)
	}
	exports := parseExports(t, stdout)
	u, err := url.Parse(exports["AWS_ENDPOINT_URL"])
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	baseEnv := cleanEnv("HOME=" + home)
	for k, v := range exports {
		baseEnv = append(baseEnv, k+"="+v)
	}

	clients := []struct {
		name string
		bin  string
		// upload returns the command putting file at key; download the one
		// printing key's content on stdout (or writing it to dst).
		upload   func(file, key string) []string
		download func(key, dst string) []string
		env      []string
		setup    func(t *testing.T)
	}{
		{
			name: "boto3", bin: "python3",
			upload: func(file, key string) []string {
				return []string{"python3", "-c", `import boto3,sys; boto3.client("s3").upload_file(sys.argv[1], "input", sys.argv[2])`, file, key}
			},
			download: func(key, dst string) []string {
				return []string{"python3", "-c", `import boto3,sys; boto3.client("s3").download_file("output", sys.argv[1], sys.argv[2])`, key, dst}
			},
			setup: func(t *testing.T) {
				if err := exec.Command("python3", "-c", "import boto3").Run(); err != nil {
					t.Skip("python3 with boto3 is not installed (Debian: apt-get install python3-boto3)")
				}
			},
		},
		{
			name: "rclone", bin: "rclone",
			env: []string{
				"RCLONE_CONFIG=" + filepath.Join(home, "rclone.conf"),
				"RCLONE_CONFIG_CONVEYOR_TYPE=s3",
				"RCLONE_CONFIG_CONVEYOR_PROVIDER=Other",
				"RCLONE_CONFIG_CONVEYOR_ENV_AUTH=true",
				"RCLONE_CONFIG_CONVEYOR_ENDPOINT=" + exports["AWS_ENDPOINT_URL"],
				"RCLONE_CONFIG_CONVEYOR_REGION=" + exports["AWS_REGION"],
				"RCLONE_CONFIG_CONVEYOR_FORCE_PATH_STYLE=true",
			},
			upload: func(file, key string) []string {
				return []string{"rclone", "copyto", "--s3-no-check-bucket", file, "conveyor:input/" + key}
			},
			download: func(key, dst string) []string {
				return []string{"rclone", "copyto", "conveyor:output/" + key, dst}
			},
		},
		{
			name: "s3cmd", bin: "s3cmd",
			upload: func(file, key string) []string {
				return []string{"s3cmd", "-c", filepath.Join(home, "s3cfg"), "put", file, "s3://input/" + key}
			},
			download: func(key, dst string) []string {
				return []string{"s3cmd", "-c", filepath.Join(home, "s3cfg"), "get", "s3://output/" + key, dst}
			},
			setup: func(t *testing.T) {
				cfg := fmt.Sprintf("[default]\naccess_key = %s\nsecret_key = %s\nhost_base = %s\nhost_bucket = %s\nbucket_location = %s\nuse_https = False\nsignature_v2 = False\n",
					exports["AWS_ACCESS_KEY_ID"], exports["AWS_SECRET_ACCESS_KEY"], u.Host, u.Host, exports["AWS_REGION"])
				if err := os.WriteFile(filepath.Join(home, "s3cfg"), []byte(cfg), 0o600); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			if _, err := exec.LookPath(c.bin); err != nil {
				t.Skipf("%s is not on PATH (Debian package: %s); .ci/run installs it", c.bin, c.name)
			}
			if c.setup != nil {
				c.setup(t)
			}
			run := func(args []string) {
				t.Helper()
				cmd := exec.Command(args[0], args[1:]...)
				cmd.Env = append(append([]string{}, baseEnv...), c.env...)
				cmd.Dir = t.TempDir()
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				if err := cmd.Run(); err != nil {
					t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out.String())
				}
			}
			body := []byte(fmt.Sprintf("uploaded with %s\nkey with a space and ü\n", c.name))
			key := "clients/" + c.name + "/file ü.txt"
			file := filepath.Join(t.TempDir(), "in.txt")
			os.WriteFile(file, body, 0o644)
			run(c.upload(file, key))

			r := waitState(t, up.S3, headJobID(t, up.S3, key), job.Succeeded, jobTimeout)
			raw := checkReport(t, up.S3, r, body)
			dst := filepath.Join(t.TempDir(), "report.json")
			run(c.download(key+"/report.json", dst))
			got, err := os.ReadFile(dst)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, raw) {
				t.Errorf("%s downloaded\n%s\nthe object is\n%s", c.name, got, raw)
			}
		})
	}
}
