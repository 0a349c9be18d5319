//! The image pipeline's actions on the wire (a bake: StopInstances,
//! GetConsoleOutput, CreateImage, DescribeImages, DeregisterImage,
//! DeleteSnapshot), checked by a third party: botocore (the aws CLI's
//! library, from the workspace's `.tools/venv`, against EC2's own service
//! model) serializes the requests the aws CLI would send, which must
//! decode into our request structs with the values given, and parses the
//! XML our response structs write, which must give back the fields a bake
//! relies on (snapshot ids, creation date, tags, state, paging, console
//! text).

// Tests fail by panicking; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use crate::botocore::python;
use endstate_wire::*;

/// Prints one `Operation<TAB>form body` line per request, serialized by
/// botocore's EC2 serializer and form-encoded as the aws CLI does.
const SERIALIZE: &str = r#"
import sys, urllib.parse
import botocore.session
from botocore.serialize import create_serializer
model = botocore.session.get_session().get_service_model('ec2')
serializer = create_serializer('ec2')
requests = [
  ('StopInstances', {'InstanceIds': ['i-0123456789abcdef0']}),
  ('GetConsoleOutput', {'InstanceId': 'i-0123456789abcdef0', 'Latest': True}),
  ('CreateImage', {'InstanceId': 'i-0123456789abcdef0', 'Name': 'web 2026-11-28', 'Description': 'baked: a+b',
      'NoReboot': True, 'TagSpecifications': [
          {'ResourceType': 'image', 'Tags': [{'Key': 'endstate:bake', 'Value': 'web'}, {'Key': 'endstate:parent', 'Value': 'ami-1'}]},
          {'ResourceType': 'snapshot', 'Tags': [{'Key': 'endstate:bake', 'Value': 'web'}]}]}),
  ('DescribeImages', {'Owners': ['self'], 'Filters': [
      {'Name': 'tag:endstate:bake', 'Values': ['web']}, {'Name': 'tag-key', 'Values': ['endstate:parent']},
      {'Name': 'name', 'Values': ['web *']}, {'Name': 'state', 'Values': ['available', 'pending']}],
      'MaxResults': 1000, 'NextToken': 'page/2='}),
  ('DeregisterImage', {'ImageId': 'ami-0123456789abcdef0'}),
  ('DeleteSnapshot', {'SnapshotId': 'snap-0123456789abcdef0'}),
]
for op, params in requests:
    request = serializer.serialize_to_request(params, model.operation_model(op))
    print(op + '\t' + urllib.parse.urlencode(request['body']))
"#;

#[test]
fn image_requests_the_aws_cli_sends_decode() {
    let lines = python(SERIALIZE, "");
    let decoded: Vec<Ec2Request> = lines
        .lines()
        .map(|line| {
            let (op, body) = line.split_once('\t').unwrap();
            let request =
                Ec2Request::from_form(body).unwrap_or_else(|e| panic!("{op}: {e} in {body}"));
            assert_eq!(request.action(), op);
            request
        })
        .collect();
    let expected = vec![
        Ec2Request::StopInstances(StopInstancesRequest {
            instance_ids: vec!["i-0123456789abcdef0".into()],
            force: None,
        }),
        Ec2Request::GetConsoleOutput(GetConsoleOutputRequest {
            instance_id: "i-0123456789abcdef0".into(),
            latest: Some(true),
        }),
        Ec2Request::CreateImage(CreateImageRequest {
            instance_id: "i-0123456789abcdef0".into(),
            name: "web 2026-11-28".into(),
            description: Some("baked: a+b".into()),
            no_reboot: Some(true),
            tag_specifications: vec![
                TagSpecification {
                    resource_type: "image".into(),
                    tags: vec![
                        Tag::new("endstate:bake", "web"),
                        Tag::new("endstate:parent", "ami-1"),
                    ],
                },
                TagSpecification {
                    resource_type: "snapshot".into(),
                    tags: vec![Tag::new("endstate:bake", "web")],
                },
            ],
        }),
        Ec2Request::DescribeImages(DescribeImagesRequest {
            image_ids: vec![],
            owners: vec!["self".into()],
            filters: vec![
                Filter {
                    name: "tag:endstate:bake".into(),
                    values: vec!["web".into()],
                },
                Filter {
                    name: "tag-key".into(),
                    values: vec!["endstate:parent".into()],
                },
                Filter {
                    name: "name".into(),
                    values: vec!["web *".into()],
                },
                Filter {
                    name: "state".into(),
                    values: vec!["available".into(), "pending".into()],
                },
            ],
            max_results: Some(1000),
            next_token: Some("page/2=".into()),
        }),
        Ec2Request::DeregisterImage(DeregisterImageRequest {
            image_id: "ami-0123456789abcdef0".into(),
        }),
        Ec2Request::DeleteSnapshot(DeleteSnapshotRequest {
            snapshot_id: "snap-0123456789abcdef0".into(),
        }),
    ];
    assert_eq!(decoded, expected);
    // And back: what our client sends is what botocore would.
    for (line, request) in lines.lines().zip(&expected) {
        let (_, body) = line.split_once('\t').unwrap();
        assert_eq!(
            Params::from_form(body).unwrap(),
            request.to_params(),
            "{}",
            request.action()
        );
    }
}

const PARSE: &str = r#"
import sys, os
import botocore.session
from botocore.parsers import create_parser
d = sys.argv[1]
model = botocore.session.get_session().get_service_model('ec2')
parser = create_parser('ec2')
def parse(op):
    body = open(os.path.join(d, op + '.xml'), 'rb').read()
    shape = model.operation_model(op).output_shape
    return parser.parse({'body': body, 'headers': {}, 'status_code': 200}, shape)
r = parse('DescribeImages')
assert r['NextToken'] == 'page-2', r
a, b = r['Images']
assert a['ImageId'] == 'ami-0123456789abcdef0' and a['State'] == 'available', a
assert a['CreationDate'] == '2026-11-28T03:10:00.000Z', a
assert a['Name'] == 'web-2026-11-28', a
assert a['Tags'] == [{'Key': 'endstate:bake', 'Value': 'web'}], a
assert [m['Ebs']['SnapshotId'] for m in a['BlockDeviceMappings']] == ['snap-0123456789abcdef0', 'snap-0fedcba9876543210'], a
m = a['BlockDeviceMappings'][0]
assert m['DeviceName'] == '/dev/xvda' and m['Ebs']['VolumeSize'] == 8 and m['Ebs']['DeleteOnTermination'] is True, m
assert m['Ebs']['VolumeType'] == 'gp3', m
assert b['State'] == 'pending' and b.get('BlockDeviceMappings', []) == [], b
r = parse('GetConsoleOutput')
assert r['InstanceId'] == 'i-0123456789abcdef0', r
import base64
assert base64.b64decode(r['Output']) == b'endstate: boot finished\n', r
assert parse('DeleteSnapshot')['ResponseMetadata']['RequestId'] == 'req-3'
assert parse('CreateImage')['ImageId'] == 'ami-0123456789abcdef0'
assert parse('DeregisterImage')['Return'] is True
print('ok')
"#;

#[test]
fn botocore_parses_our_image_responses() {
    let dir = tempfile::tempdir().unwrap();
    let image = |id: &str, state: &str, tags: Vec<Tag>| Image {
        image_id: id.into(),
        name: Some(format!(
            "web-2026-11-28{}",
            if state == "pending" { "b" } else { "" }
        )),
        state: state.into(),
        owner_id: Some("123456789012".into()),
        architecture: Some("x86_64".into()),
        root_device_name: Some("/dev/xvda".into()),
        creation_date: Some("2026-11-28T03:10:00.000Z".into()),
        tags,
    };
    let images = DescribeImagesResponse {
        request_id: Some("req-1".into()),
        images: vec![
            image(
                "ami-0123456789abcdef0",
                "available",
                vec![Tag::new("endstate:bake", "web")],
            ),
            image("ami-0aaaaaaaaaaaaaaa1", "pending", vec![]),
        ],
        block_devices: BTreeMap::from([(
            "ami-0123456789abcdef0".to_string(),
            vec![
                ImageBlockDevice {
                    device_name: "/dev/xvda".into(),
                    snapshot_id: Some("snap-0123456789abcdef0".into()),
                    volume_size: Some(8),
                    volume_type: Some("gp3".into()),
                    delete_on_termination: Some(true),
                },
                ImageBlockDevice {
                    device_name: "/dev/xvdb".into(),
                    snapshot_id: Some("snap-0fedcba9876543210".into()),
                    ..Default::default()
                },
            ],
        )]),
        next_token: Some("page-2".into()),
    };
    let console = GetConsoleOutputResponse {
        request_id: Some("req-2".into()),
        instance_id: "i-0123456789abcdef0".into(),
        timestamp: Some("2026-11-28T03:10:00.000Z".into()),
        output: Some(UserData(b"endstate: boot finished\n".to_vec()).to_base64()),
    };
    let documents = [
        ("DescribeImages", images.to_xml()),
        ("GetConsoleOutput", console.to_xml()),
        (
            "DeleteSnapshot",
            DeleteSnapshotResponse {
                request_id: Some("req-3".into()),
            }
            .to_xml(),
        ),
        (
            "CreateImage",
            CreateImageResponse {
                request_id: Some("req-4".into()),
                image_id: "ami-0123456789abcdef0".into(),
            }
            .to_xml(),
        ),
        (
            "DeregisterImage",
            DeregisterImageResponse {
                request_id: Some("req-5".into()),
            }
            .to_xml(),
        ),
    ];
    for (name, xml) in documents {
        std::fs::write(dir.path().join(format!("{name}.xml")), xml).unwrap();
    }
    assert_eq!(python(PARSE, dir.path().to_str().unwrap()).trim(), "ok");
    // Our own reader agrees with botocore on the same documents.
    assert_eq!(
        DescribeImagesResponse::from_xml(&images.to_xml()).unwrap(),
        images
    );
    assert_eq!(
        GetConsoleOutputResponse::from_xml(&console.to_xml())
            .unwrap()
            .decoded_output()
            .unwrap(),
        b"endstate: boot finished\n"
    );
}
