package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/jsii-runtime-go"
)

// Network is a VPC with isolated subnets only: the worker reaches S3 through
// a gateway endpoint and Systems Manager through interface endpoints, so
// there is no internet gateway and no NAT to pay for.
type Network struct {
	Vpc awsec2.Vpc
	// WorkerSubnet is where the worker and its data volume live (a volume
	// attaches only within its availability zone).
	WorkerSubnet awsec2.ISubnet
	// WorkerSecurityGroup has no inbound rule; EndpointSecurityGroup admits
	// HTTPS from the worker only.
	WorkerSecurityGroup, EndpointSecurityGroup awsec2.SecurityGroup
}

// interfaceEndpoints are what the SSM agent needs to receive Run Command
// (ec2messages, ssmmessages) and to register (ssm); CloudWatch Logs, where
// the agent sends command output (and with it the workers' EMF metrics)
// and worker run sends job logs; and EventBridge, where worker run puts
// job events. Without an endpoint a call from the isolated subnets
// reaches nothing: the command output never arrived before the Logs one.
var interfaceEndpoints = []struct {
	id  string
	svc awsec2.InterfaceVpcEndpointAwsService
}{
	{"SsmEndpoint", awsec2.InterfaceVpcEndpointAwsService_SSM()},
	{"SsmMessagesEndpoint", awsec2.InterfaceVpcEndpointAwsService_SSM_MESSAGES()},
	{"Ec2MessagesEndpoint", awsec2.InterfaceVpcEndpointAwsService_EC2_MESSAGES()},
	{"LogsEndpoint", awsec2.InterfaceVpcEndpointAwsService_CLOUDWATCH_LOGS()},
	{"EventsEndpoint", awsec2.InterfaceVpcEndpointAwsService_EVENTBRIDGE()},
}

func newNetwork(stack awscdk.Stack, storage *Storage) *Network {
	isolated := &awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PRIVATE_ISOLATED}
	vpc := awsec2.NewVpc(stack, jsii.String("Vpc"), &awsec2.VpcProps{
		IpAddresses: awsec2.IpAddresses_Cidr(jsii.String("10.42.0.0/16")),
		MaxAzs:      jsii.Number(2),
		NatGateways: jsii.Number(0),
		SubnetConfiguration: &[]*awsec2.SubnetConfiguration{
			{Name: jsii.String("isolated"), SubnetType: awsec2.SubnetType_PRIVATE_ISOLATED, CidrMask: jsii.Number(24)},
		},
		GatewayEndpoints: &map[string]*awsec2.GatewayVpcEndpointOptions{
			"S3": {Service: awsec2.GatewayVpcEndpointAwsService_S3(), Subnets: &[]*awsec2.SubnetSelection{isolated}},
		},
		FlowLogs: &map[string]*awsec2.FlowLogOptions{
			"FlowLog": {
				Destination: awsec2.FlowLogDestination_ToS3(storage.Logs, jsii.String("vpc-flow-logs/"), nil),
				TrafficType: awsec2.FlowLogTrafficType_ALL,
			},
		},
	})
	workerSG := awsec2.NewSecurityGroup(stack, jsii.String("WorkerSecurityGroup"), &awsec2.SecurityGroupProps{
		Vpc:              vpc,
		Description:      jsii.String("Conveyor worker: no inbound rule; HTTPS out to the VPC endpoints"),
		AllowAllOutbound: jsii.Bool(false),
	})
	// Isolated subnets route only to the VPC endpoints (interface endpoints
	// in the VPC, S3 through the gateway endpoint's prefix list), so HTTPS
	// to anywhere reaches nothing else.
	workerSG.AddEgressRule(awsec2.Peer_AnyIpv4(), awsec2.Port_Tcp(jsii.Number(443)),
		jsii.String("HTTPS to the SSM endpoints and the S3 gateway endpoint"), nil)
	endpointSG := awsec2.NewSecurityGroup(stack, jsii.String("EndpointSecurityGroup"), &awsec2.SecurityGroupProps{
		Vpc:              vpc,
		Description:      jsii.String("Conveyor SSM interface endpoints: HTTPS from the worker only"),
		AllowAllOutbound: jsii.Bool(false),
	})
	endpointSG.AddIngressRule(workerSG, awsec2.Port_Tcp(jsii.Number(443)), jsii.String("HTTPS from the worker"), nil)
	for _, e := range interfaceEndpoints {
		vpc.AddInterfaceEndpoint(jsii.String(e.id), &awsec2.InterfaceVpcEndpointOptions{
			Service:           e.svc,
			Subnets:           isolated,
			PrivateDnsEnabled: jsii.Bool(true),
			SecurityGroups:    &[]awsec2.ISecurityGroup{endpointSG},
			// Open would admit the whole VPC CIDR; the rule above is narrower.
			Open: jsii.Bool(false),
		})
	}
	return &Network{
		Vpc:                   vpc,
		WorkerSubnet:          (*vpc.IsolatedSubnets())[0],
		WorkerSecurityGroup:   workerSG,
		EndpointSecurityGroup: endpointSG,
	}
}
