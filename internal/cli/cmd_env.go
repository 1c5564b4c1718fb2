package cli

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/conveyorhq/conveyor/internal/local"
)

func newEnvCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "env",
		Short: "Print shell exports that point S3 clients at the running pipeline",
		Long: `Print export lines for AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_REGION, for the pipeline of the data dir, so
that the AWS CLI, the SDKs, boto3 and rclone reach the embedded server. With
s3.endpoint (a store of your own) they point at that store instead, with its
keys only when the configuration holds them.`,
		Example: `  eval "$(conveyor env)"
  aws s3 cp photo.jpg s3://input/
  eval "$(conveyor env --data-dir /srv/conveyor)"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runEnv(cmd.Context(), g) },
	}
}

func runEnv(_ context.Context, g *globals) error {
	c, err := g.config()
	if err != nil {
		return err
	}
	if c.externalMode() {
		return envExternal(g, c)
	}
	paths := local.Paths{Root: c.DataDir}
	creds, err := local.LoadCredentials(paths)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("data dir %s has no credentials yet; run 'conveyor up --data-dir %s' first", c.DataDir, c.DataDir)
	}
	if err != nil {
		return err
	}
	if c.S3.AccessKeyID != "" {
		creds = local.Credentials{AccessKeyID: c.S3.AccessKeyID, SecretAccessKey: c.S3.SecretAccessKey}
	}
	endpoint, region := "http://"+c.S3.Addr, c.S3.Region
	if ri, err := local.ReadRunInfo(paths); err == nil {
		endpoint, region = ri.Endpoint, ri.Region
	}
	fmt.Fprintf(g.Out, "export AWS_ENDPOINT_URL=%s\n", shellQuote(endpoint))
	fmt.Fprintf(g.Out, "export AWS_ACCESS_KEY_ID=%s\n", shellQuote(creds.AccessKeyID))
	fmt.Fprintf(g.Out, "export AWS_SECRET_ACCESS_KEY=%s\n", shellQuote(creds.SecretAccessKey))
	fmt.Fprintf(g.Out, "export AWS_REGION=%s\n", shellQuote(region))
	return nil
}

// envExternal points S3 clients at the store of s3.endpoint. Its keys are
// printed only when the configuration holds them; otherwise clients use
// the AWS configuration they already have, as conveyor does.
func envExternal(g *globals, c FileConfig) error {
	fmt.Fprintf(g.Out, "export AWS_ENDPOINT_URL=%s\n", shellQuote(c.S3.Endpoint))
	if c.S3.AccessKeyID != "" {
		fmt.Fprintf(g.Out, "export AWS_ACCESS_KEY_ID=%s\n", shellQuote(c.S3.AccessKeyID))
		fmt.Fprintf(g.Out, "export AWS_SECRET_ACCESS_KEY=%s\n", shellQuote(c.S3.SecretAccessKey))
	} else {
		fmt.Fprintf(g.Out, "# s3.access_key_id is not set: the store's keys come from your AWS configuration (AWS_ACCESS_KEY_ID, ~/.aws)\n")
	}
	if c.S3.Region != "" {
		fmt.Fprintf(g.Out, "export AWS_REGION=%s\n", shellQuote(c.S3.Region))
	}
	if c.S3.CAFile != "" {
		fmt.Fprintf(g.Out, "export AWS_CA_BUNDLE=%s\n", shellQuote(c.S3.CAFile))
	}
	return nil
}
