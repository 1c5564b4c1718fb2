package main

import (
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsssm"
	"github.com/aws/jsii-runtime-go"
)

// UpdateDrainWait is how long an update waits for the jobs running on a
// worker to finish before it tells them to hand their jobs back.
const UpdateDrainWait = 15 * time.Minute

// UpdateTimeoutSeconds bounds the update command on one worker: the drain,
// the downloads and the bundle's setup.
const UpdateTimeoutSeconds = 3600

// Release is what a deploy ships to the workers, and how it reaches the
// running ones without replacing or restarting them:
//
//   - Parameter (an SSM String parameter) holds the release manifest: the
//     URL and SHA-256 of the binary, the worker's configuration and the
//     processor bundle. The boot script reads it at every boot, so user
//     data and the launch template never change with a build.
//   - Association (State Manager) runs Document on every worker whenever
//     its Release parameter, the manifest's digest, changes (CloudFormation
//     updates it; State Manager runs an updated association at once) and
//     on every worker that comes online: conveyor-install --drain, which
//     does nothing when the release is installed, and otherwise drains the
//     worker, installs the release and returns it to service.
type Release struct {
	Parameter   awsssm.StringParameter
	Name        string
	Digest      string
	Document    awsssm.CfnDocument
	Association awsssm.CfnAssociation
}

// releaseFile is one line of the manifest.
type releaseFile struct {
	kind   string
	url    *string
	sha256 string
	dest   string // the bundle's archive path; "" otherwise
}

// newRelease defines the manifest parameter, the update document and its
// association.
func newRelease(stack awscdk.Stack, files []releaseFile) *Release {
	r := &Release{Name: "/conveyor/" + *stack.StackName() + "/release"}
	parts := []*string{}
	digest := sha256.New()
	for _, f := range files {
		parts = append(parts, jsii.String(f.kind+" "), f.url, jsii.String(" "+f.sha256+" "+f.dest+"\n"))
		digest.Write([]byte(f.kind + " " + f.sha256 + " " + f.dest + "\n"))
	}
	r.Digest = hex.EncodeToString(digest.Sum(nil))
	r.Parameter = awsssm.NewStringParameter(stack, jsii.String("ReleaseParameter"), &awsssm.StringParameterProps{
		ParameterName: jsii.String(r.Name),
		Description:   jsii.String("Conveyor: the workers' release (binary, configuration, bundle: asset URL and SHA-256), read at every boot and by the update"),
		StringValue:   awscdk.Fn_Join(jsii.String(""), &parts),
		Tier:          awsssm.ParameterTier_STANDARD,
	})
	r.Document = awsssm.NewCfnDocument(stack, jsii.String("UpdateDocument"), &awsssm.CfnDocumentProps{
		DocumentType:   jsii.String("Command"),
		DocumentFormat: jsii.String("JSON"),
		Content: map[string]interface{}{
			"schemaVersion": "2.2",
			"description":   "Conveyor: install the stack's current worker release on this worker, draining it first when the release changed",
			"parameters": map[string]interface{}{
				"Release": map[string]interface{}{
					"type":           "String",
					"description":    "The release's digest: a new value makes State Manager run the update again",
					"allowedPattern": "^[0-9a-f]{64}$",
				},
			},
			"mainSteps": []interface{}{map[string]interface{}{
				"action": "aws:runShellScript",
				"name":   "installRelease",
				"inputs": map[string]interface{}{
					"timeoutSeconds": UpdateTimeoutSeconds,
					"runCommand": []interface{}{
						"set -eu",
						"# A worker coming online runs this while its boot script may still run: wait for it.",
						"cloud-init status --wait >/dev/null 2>&1 || true",
						"if [ ! -x /usr/local/sbin/conveyor-install ]; then",
						"  echo 'conveyor: this worker was launched from a boot script older than updates in place: replace it (aws autoscaling start-instance-refresh --auto-scaling-group-name <stack>-workers); a new worker installs the current release at boot' >&2",
						"  exit 1",
						"fi",
						"exec /usr/local/sbin/conveyor-install --drain",
					},
				},
			}},
		},
	})
	r.Association = awsssm.NewCfnAssociation(stack, jsii.String("UpdateAssociation"), &awsssm.CfnAssociationProps{
		Name:            r.Document.Ref(),
		AssociationName: jsii.String(*stack.StackName() + "-worker-update"),
		Targets: &[]interface{}{&awsssm.CfnAssociation_TargetProperty{
			Key: jsii.String("tag:" + WorkerTagKey), Values: jsii.Strings(WorkerTagValue),
		}},
		Parameters: &map[string]interface{}{"Release": []interface{}{r.Digest}},
		// Half the workers at most drain at once; a failure on one does
		// not stop the others (it reports in the association's history).
		MaxConcurrency: jsii.String("50%"),
		MaxErrors:      jsii.String("100%"),
	})
	r.Association.AddResourceDependency(r.Parameter.Node().DefaultChild().(awscdk.CfnResource), jsii.String("the update installs the release the parameter holds"))
	return r
}

// grantRelease gives the workers what State Manager's agent calls to run
// the update association, on this association, its document and the
// account's instances (the worker's own ID exists only after the role),
// and the manifest parameter.
func grantRelease(stack awscdk.Stack, role awsiam.Role, r *Release) {
	instances := workerInstancesArn(stack)
	doc := stack.FormatArn(&awscdk.ArnComponents{Service: jsii.String("ssm"), Resource: jsii.String("document"), ResourceName: r.Document.Ref()})
	association := stack.FormatArn(&awscdk.ArnComponents{Service: jsii.String("ssm"), Resource: jsii.String("association"), ResourceName: r.Association.AttrAssociationId()})
	// Read the release manifest (boot and update).
	role.AddToPolicy(statement([]string{"ssm:GetParameter"}, r.Parameter.ParameterArn()))
	// The agent lists its associations, reads this one and its document,
	// and reports its status and compliance.
	role.AddToPolicy(statement([]string{"ssm:ListInstanceAssociations", "ssm:UpdateInstanceAssociationStatus", "ssm:PutComplianceItems"}, instances))
	role.AddToPolicy(statement([]string{"ssm:DescribeAssociation"}, association, doc, instances))
	role.AddToPolicy(statement([]string{"ssm:GetDocument", "ssm:DescribeDocument"}, doc))
}
