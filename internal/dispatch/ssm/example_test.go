package ssm_test

import (
	"context"
	"log"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	awsssm "github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/conveyorhq/conveyor/internal/dispatch/ssm"
)

// The AWS wiring builds the driver once per Lambda container and hands it
// to the orchestrator; each job is one Dispatch.
func Example() {
	ctx := context.Background()
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		log.Fatal(err)
	}
	d, err := ssm.New(ssm.Config{
		DocumentName:     "conveyor-run-job",
		TagKey:           "conveyor:role",
		TagValue:         "worker",
		ExecutionTimeout: 2 * time.Hour,
		LogGroup:         "/conveyor/commands",
		StartStopped:     true,
		AutoScalingGroup: "Conveyor-workers", // a stopped fleet is brought up by its desired capacity
	}, awsssm.NewFromConfig(awsCfg), ec2.NewFromConfig(awsCfg), ssm.WithAutoScaling(autoscaling.NewFromConfig(awsCfg)))
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()
	commandID, err := d.Dispatch(ctx, "0123456789abcdef0123456789abcdef")
	if err != nil {
		log.Print(err) // errors.Is(err, dispatch.ErrFull): held, queued; dispatch.ErrUnavailable: retry later
		return
	}
	log.Printf("job sent as command %s", commandID)
}
