//! The server direction, checked by a third party: the XML our response
//! structs write is parsed by botocore (the aws CLI's parser, from the
//! workspace's `.tools/venv`) against EC2's own service model, and the
//! fields endstate relies on come out right.

// Tests fail by panicking; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use crate::botocore::venv_python;
use endstate_wire::*;

const CHECK: &str = r#"
import sys, os
import botocore.session
from botocore.parsers import create_parser
d = sys.argv[1]
model = botocore.session.get_session().get_service_model('ec2')
parser = create_parser('ec2')
def parse(op, status=200):
    body = open(os.path.join(d, op + '.xml'), 'rb').read()
    shape = model.operation_model(op).output_shape if status == 200 else None
    return parser.parse({'body': body, 'headers': {}, 'status_code': status}, shape)
r = parse('RunInstances')
i = r['Instances'][0]
assert r['ReservationId'] == 'r-1', r
assert i['InstanceId'] == 'i-0123456789abcdef0', i
assert i['State'] == {'Code': 0, 'Name': 'pending'}, i
assert i['Placement']['AvailabilityZone'] == 'us-east-1a', i
assert i['Tags'] == [{'Key': 'endstate:project', 'Value': 'a & <b>'}], i
assert i['ClientToken'] == 'tok', i
assert i['PrivateIpAddress'] == '10.0.0.7', i
assert i['MetadataOptions']['HttpTokens'] == 'required', i
assert i['MetadataOptions']['HttpPutResponseHopLimit'] == 2, i
assert r['ResponseMetadata']['RequestId'] == 'req-1', r
r = parse('DescribeInstances')
assert r['NextToken'] == 'next', r
assert [x['InstanceId'] for res in r['Reservations'] for x in res['Instances']] == ['i-0123456789abcdef0'], r
r = parse('TerminateInstances')
assert r['TerminatingInstances'][0]['CurrentState']['Name'] == 'shutting-down', r
assert r['TerminatingInstances'][0]['PreviousState']['Code'] == 16, r
r = parse('DescribeImages')
assert r['Images'][0]['ImageId'] == 'ami-1' and r['Images'][0]['State'] == 'available', r
assert r['Images'][0]['Name'] == 'web-base-1', r
r = parse('DescribeAvailabilityZones')
assert [z['ZoneName'] for z in r['AvailabilityZones']] == ['us-east-1a'], r
parse('CreateTags'); parse('DeleteTags')
r = parse('Error', 400)
assert r['Error'] == {'Code': 'RequestLimitExceeded', 'Message': 'Request limit exceeded.'}, r
assert r['ResponseMetadata']['RequestId'] == 'req-9', r
print('ok')
"#;

fn instance() -> Instance {
    Instance {
        instance_id: "i-0123456789abcdef0".into(),
        image_id: "ami-1".into(),
        instance_type: "t3.micro".into(),
        state: InstanceStateInfo::named("pending"),
        availability_zone: "us-east-1a".into(),
        launch_time: "2026-11-27T15:29:14.000Z".into(),
        subnet_id: Some("subnet-1".into()),
        vpc_id: Some("vpc-1".into()),
        private_ip_address: Some("10.0.0.7".into()),
        client_token: Some("tok".into()),
        key_name: None,
        ami_launch_index: Some(0),
        tags: vec![Tag::new("endstate:project", "a & <b>")],
        metadata_options: Some(InstanceMetadataOptions {
            http_tokens: Some("required".into()),
            http_put_response_hop_limit: Some(2),
            http_endpoint: Some("enabled".into()),
            instance_metadata_tags: Some("enabled".into()),
        }),
    }
}

#[test]
fn botocore_parses_what_a_server_writes() {
    let dir = tempfile::tempdir().unwrap();
    let reservation = Reservation {
        reservation_id: "r-1".into(),
        owner_id: "123456789012".into(),
        instances: vec![instance()],
    };
    let documents = [
        (
            "RunInstances",
            RunInstancesResponse {
                request_id: Some("req-1".into()),
                reservation: reservation.clone(),
            }
            .to_xml(),
        ),
        (
            "DescribeInstances",
            DescribeInstancesResponse {
                request_id: Some("req-2".into()),
                reservations: vec![reservation],
                next_token: Some("next".into()),
            }
            .to_xml(),
        ),
        (
            "TerminateInstances",
            TerminateInstancesResponse {
                request_id: Some("req-3".into()),
                instances: vec![InstanceStateChange {
                    instance_id: "i-0123456789abcdef0".into(),
                    current_state: InstanceStateInfo::named("shutting-down"),
                    previous_state: InstanceStateInfo::named("running"),
                }],
            }
            .to_xml(),
        ),
        (
            "DescribeImages",
            DescribeImagesResponse {
                request_id: Some("req-4".into()),
                images: vec![Image {
                    image_id: "ami-1".into(),
                    name: Some("web-base-1".into()),
                    state: "available".into(),
                    owner_id: Some("123456789012".into()),
                    architecture: Some("x86_64".into()),
                    root_device_name: Some("/dev/xvda".into()),
                    creation_date: None,
                    tags: vec![],
                }],
                ..Default::default()
            }
            .to_xml(),
        ),
        (
            "DescribeAvailabilityZones",
            DescribeAvailabilityZonesResponse {
                request_id: Some("req-5".into()),
                zones: vec![AvailabilityZone {
                    zone_name: "us-east-1a".into(),
                    zone_id: Some("use1-az6".into()),
                    state: "available".into(),
                    region_name: "us-east-1".into(),
                }],
            }
            .to_xml(),
        ),
        (
            "CreateTags",
            CreateTagsResponse {
                request_id: Some("req-6".into()),
            }
            .to_xml(),
        ),
        (
            "DeleteTags",
            DeleteTagsResponse {
                request_id: Some("req-7".into()),
            }
            .to_xml(),
        ),
        (
            "Error",
            ErrorResponse::single("RequestLimitExceeded", "Request limit exceeded.", "req-9")
                .to_xml(),
        ),
    ];
    for (name, xml) in documents {
        std::fs::write(dir.path().join(format!("{name}.xml")), xml).unwrap();
    }
    let output = Command::new(venv_python())
        .args(["-c", CHECK])
        .arg(dir.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "botocore rejected our XML:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
