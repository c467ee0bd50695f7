"""The EC2 Query API through the real clients: boto3 and the aws CLI, unmodified, with
only an endpoint URL and dummy credentials. Run by tests/bench_ec2.rs on the bench.

Tests run in the order of their names and share one guest (TCG boots take a minute).
"""

import base64
import json
import os
import subprocess
import time
import unittest
import urllib.error
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

import model_check

ENDPOINT = os.environ["EC2LOCAL_ENDPOINT"]
IMAGE = os.environ["EC2LOCAL_IMAGE_ID"]
TMP = os.environ["EC2LOCAL_TMP"]
AWS = os.environ["EC2LOCAL_AWS_CLI"]
SSH_OPTIONS = [
    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
]
# No retries: a 5xx must show here, not be hidden by the SDK.
CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"})


def client(region="us-east-1"):
    return model_check.install(boto3.client("ec2", endpoint_url=ENDPOINT, region_name=region, config=CONFIG))


ec2 = client()


def code_of(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError(f"{call.__name__} succeeded")


def aws(*args):
    """The aws CLI, JSON out."""
    out = subprocess.run(
        [AWS, "--endpoint-url", ENDPOINT, "--output", "json", "ec2", *args],
        capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0, f"aws ec2 {' '.join(args)}: {out.stderr}"
    return json.loads(out.stdout) if out.stdout.strip() else {}


def rest(path):
    with urllib.request.urlopen(f"{ENDPOINT}/api{path}") as r:
        return json.load(r)


def keygen(name):
    path = os.path.join(TMP, name)
    if not os.path.exists(path):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)
    with open(path + ".pub") as f:
        return path, f.read()


def ssh(key, ip, command):
    out = subprocess.run(
        ["ssh", *SSH_OPTIONS, "-i", key, f"ubuntu@{ip}", command], capture_output=True, text=True, check=False
    )
    return out.stdout if out.returncode == 0 else None


def wait(what, check, timeout=420, every=3):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


def instance(instance_id):
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservations[0]["Instances"][0]


class Ec2(unittest.TestCase):
    shared = {}

    def setUp(self):
        self.started = time.time()

    def tearDown(self):
        print(f"  {self.id().rsplit('.', 1)[-1]}: {time.time() - self.started:.0f} s", flush=True)

    def test_00_the_wire(self):
        # A plain GET / is still the web UI.
        with urllib.request.urlopen(ENDPOINT + "/") as r:
            self.assertIn("text/html", r.headers["Content-Type"])
        # GET with an action is EC2.
        with urllib.request.urlopen(ENDPOINT + "/?Action=DescribeRegions&Version=2016-11-15") as r:
            self.assertEqual(r.headers["Content-Type"], "text/xml;charset=UTF-8")
            body = r.read()
        self.assertTrue(body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>'))
        self.assertIn(b'<DescribeRegionsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>', body)
        for form, code in [(b"Version=2016-11-15", b"MissingAction"), (b"Action=LaunchRockets", b"InvalidAction")]:
            request = urllib.request.Request(ENDPOINT + "/", data=form, method="POST")
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
            with self.assertRaises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request)
            self.assertEqual(refused.exception.code, 400)
            error = refused.exception.read()
            self.assertIn(b"<Response><Errors><Error><Code>" + code, error)
            self.assertIn(b"<RequestID>", error)

    def test_01_regions_and_zones_follow_the_callers_region(self):
        paris = client("eu-west-3")
        zones = paris.describe_availability_zones()["AvailabilityZones"]
        self.assertEqual([z["ZoneName"] for z in zones], ["eu-west-3a"])
        self.assertEqual(zones[0]["State"], "available")
        self.assertIn("eu-west-3", [r["RegionName"] for r in paris.describe_regions()["Regions"]])
        self.assertEqual(aws("describe-availability-zones")["AvailabilityZones"][0]["ZoneName"], "us-east-1a")

    def test_02_key_pairs_are_one_store_with_the_rest_api(self):
        _, public = keygen("imported")
        imported = ec2.import_key_pair(KeyName="imported", PublicKeyMaterial=public.encode())
        self.assertTrue(imported["KeyPairId"].startswith("key-") and len(imported["KeyPairId"]) == 21)
        self.assertEqual(len(imported["KeyFingerprint"]), 44, "ed25519: base64 SHA-256, padded")
        self.assertEqual(code_of(ec2.import_key_pair, KeyName="imported", PublicKeyMaterial=public.encode()),
                         ("InvalidKeyPair.Duplicate", 400))
        self.assertEqual(code_of(ec2.import_key_pair, KeyName="bad", PublicKeyMaterial=b"ssh-rsa nonsense"),
                         ("InvalidKeyPair.Format", 400))
        rsa = ec2.create_key_pair(KeyName="made-rsa")
        self.assertTrue(rsa["KeyMaterial"].startswith("-----BEGIN RSA PRIVATE KEY-----"))
        self.assertRegex(rsa["KeyFingerprint"], r"^([0-9a-f]{2}:){19}[0-9a-f]{2}$", "SHA-1 of the PKCS#8 key")
        ed = aws("create-key-pair", "--key-name", "made-ed25519", "--key-type", "ed25519")
        self.assertIn("OPENSSH PRIVATE KEY", ed["KeyMaterial"])
        pairs = ec2.describe_key_pairs(IncludePublicKey=True)["KeyPairs"]
        by_name = {p["KeyName"]: p for p in pairs}
        self.assertEqual(by_name["made-rsa"]["KeyType"], "rsa")
        self.assertEqual(by_name["made-ed25519"]["KeyType"], "ed25519")
        self.assertEqual(by_name["imported"]["PublicKey"].split()[:2], public.split()[:2])
        by_id = ec2.describe_key_pairs(KeyPairIds=[imported["KeyPairId"]])["KeyPairs"]
        self.assertEqual([p["KeyName"] for p in by_id], ["imported"])
        filtered = ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": ["made-*"]}])["KeyPairs"]
        self.assertEqual(sorted(p["KeyName"] for p in filtered), ["made-ed25519", "made-rsa"])
        self.assertEqual(code_of(ec2.describe_key_pairs, KeyNames=["nobody"]), ("InvalidKeyPair.NotFound", 400))
        # The REST API sees the same pairs, and EC2 sees one made through REST.
        self.assertEqual({p["name"] for p in rest("/key-pairs")}, set(by_name))
        self.assertTrue(ec2.delete_key_pair(KeyName="made-ed25519")["Return"])
        self.assertTrue(ec2.delete_key_pair(KeyName="made-ed25519")["Return"], "missing is fine, as on AWS")
        self.assertNotIn("made-ed25519", {p["name"] for p in rest("/key-pairs")})

    def test_03_images(self):
        images = ec2.describe_images(Owners=["self"])["Images"]
        ours = [i for i in images if i["ImageId"] == IMAGE]
        self.assertEqual(len(ours), 1)
        self.assertEqual(ours[0]["State"], "available")
        self.assertIn(ours[0]["Architecture"], ("x86_64", "arm64", "aarch64"))
        named = ec2.describe_images(Filters=[{"Name": "name", "Values": ["debian-12-t*"]}])["Images"]
        self.assertEqual([i["ImageId"] for i in named], [IMAGE])
        self.assertEqual(code_of(ec2.describe_images, ImageIds=["ami-00000000"]), ("InvalidAMIID.NotFound", 400))
        pending = [i for i in images if i["State"] == "pending"]
        self.assertTrue(pending, "the catalog images are listed before they are pulled")
        code = code_of(ec2.run_instances, ImageId=pending[0]["ImageId"], MinCount=1, MaxCount=1)
        self.assertEqual(code, ("InvalidAMIID.Unavailable", 400))

    def test_04_refusals_and_dry_runs_change_nothing(self):
        before = rest("/instances?include_terminated=true")
        self.assertEqual(code_of(ec2.run_instances, ImageId=IMAGE, MinCount=1, MaxCount=1, DryRun=True),
                         ("DryRunOperation", 412))
        self.assertEqual(code_of(ec2.run_instances, ImageId=IMAGE, MinCount=1, MaxCount=1, InstanceType="m5.large"),
                         ("InvalidParameterValue", 400))
        self.assertEqual(code_of(ec2.run_instances, ImageId=IMAGE, MinCount=1, MaxCount=1, KeyName="nobody"),
                         ("InvalidKeyPair.NotFound", 400))
        self.assertEqual(code_of(ec2.describe_instances, InstanceIds=["vol-123"]), ("InvalidInstanceID.Malformed", 400))
        self.assertEqual(code_of(ec2.describe_instances, InstanceIds=["i-0123456789abcdef0"]),
                         ("InvalidInstanceID.NotFound", 400))
        self.assertEqual(code_of(ec2.describe_instances, MaxResults=3), ("InvalidParameterValue", 400))
        self.assertEqual(code_of(ec2.describe_instances, MaxResults=5, NextToken="forged"), ("InvalidParameterValue", 400))
        self.assertEqual(code_of(ec2.describe_instances, NextToken="forged"), ("InvalidParameterValue", 400))
        self.assertEqual(code_of(ec2.describe_instance_attribute, InstanceId="i-0123456789abcdef0", Attribute="userData"),
                         ("InvalidInstanceID.NotFound", 400), "AWS's long id form names no instance here")
        self.assertEqual(code_of(ec2.run_instances, ImageId=IMAGE, MinCount=1, MaxCount=1, InstanceType="m5.large", DryRun=True),
                         ("InvalidParameterValue", 400), "a dry run checks what the launch would")
        self.assertEqual(code_of(ec2.describe_instances, Filters=[{"Name": "flavour", "Values": ["x"]}]),
                         ("InvalidParameterValue", 400))
        self.assertEqual(code_of(ec2.terminate_instances, InstanceIds=["i-0000beef"]), ("InvalidInstanceID.NotFound", 400))
        self.assertEqual(rest("/instances?include_terminated=true"), before)

    def test_05_run_with_user_data_tags_and_a_client_token(self):
        key, _ = keygen("imported")
        user_data = "#cloud-config\nruncmd:\n  - [sh, -c, 'echo ec2-api > /var/tmp/from-user-data']\n"
        params = dict(
            ImageId=IMAGE, InstanceType="t2.micro", MinCount=1, MaxCount=1, KeyName="imported", UserData=user_data,
            ClientToken="lifecycle-1",
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web"}, {"Key": "env", "Value": "test"}]}],
        )
        first = ec2.run_instances(**params)
        self.assertTrue(first["ReservationId"].startswith("r-"))
        self.assertRegex(first["OwnerId"], r"^\d{12}$")
        (launched,) = first["Instances"]
        self.assertEqual(launched["State"], {"Code": 0, "Name": "pending"})
        again = ec2.run_instances(**params)
        self.assertEqual(again["ReservationId"], first["ReservationId"], "the same token answers the same reservation")
        self.assertEqual([i["InstanceId"] for i in again["Instances"]], [launched["InstanceId"]])
        changed = dict(params, InstanceType="t2.nano")
        self.assertEqual(code_of(ec2.run_instances, **changed), ("IdempotentParameterMismatch", 400))
        self.assertEqual(len([i for i in rest("/instances") if i["name"] == "web"]), 1)
        Ec2.shared["id"] = launched["InstanceId"]
        Ec2.shared["key"] = key

        ec2.get_waiter("instance_running").wait(InstanceIds=[launched["InstanceId"]], WaiterConfig={"Delay": 2, "MaxAttempts": 150})
        running = wait("an address", lambda: instance(launched["InstanceId"]).get("PrivateIpAddress") and instance(launched["InstanceId"]))
        Ec2.shared["ip"] = running["PrivateIpAddress"]
        self.assertEqual(running["Placement"]["AvailabilityZone"], "us-east-1a")
        self.assertEqual({t["Key"]: t["Value"] for t in running["Tags"]}, {"Name": "web", "env": "test"})
        self.assertEqual(rest(f"/instances/{launched['InstanceId']}")["name"], "web", "the Name tag is the REST name")
        out = wait("SSH and the user data", lambda: ssh(key, running["PrivateIpAddress"], "cat /var/tmp/from-user-data"))
        self.assertEqual(out.strip(), "ec2-api")

    def test_06_describe_filters_pagination_and_tags(self):
        iid = Ec2.shared["id"]

        def ids(**kwargs):
            return [i["InstanceId"] for r in ec2.describe_instances(**kwargs)["Reservations"] for i in r["Instances"]]

        self.assertEqual(ids(Filters=[{"Name": "tag:Name", "Values": ["we?"]}]), [iid])
        self.assertEqual(ids(Filters=[{"Name": "instance-state-name", "Values": ["stopped", "running"]},
                                      {"Name": "tag-key", "Values": ["env"]}]), [iid])
        self.assertEqual(ids(Filters=[{"Name": "private-ip-address", "Values": [Ec2.shared["ip"]]}]), [iid])
        self.assertEqual(ids(Filters=[{"Name": "instance-state-code", "Values": ["80"]}]), [])
        cli = aws("describe-instances", "--filters", "Name=tag:env,Values=test")
        self.assertEqual([i["InstanceId"] for r in cli["Reservations"] for i in r["Instances"]], [iid])
        # Pagination: the paginator follows NextToken over pages of 5.
        pages = list(ec2.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 5}))
        self.assertIn(iid, [i["InstanceId"] for p in pages for r in p["Reservations"] for i in r["Instances"]])
        self.assertEqual(code_of(ec2.describe_instances, InstanceIds=[iid], MaxResults=5),
                         ("InvalidParameterCombination", 400))
        ec2.create_tags(Resources=[iid], Tags=[{"Key": "team", "Value": "infra"}, {"Key": "Name", "Value": "web-1"}])
        self.assertEqual(rest(f"/instances/{iid}")["name"], "web-1")
        tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]
        self.assertEqual({t["Key"]: t["Value"] for t in tags}, {"Name": "web-1", "env": "test", "team": "infra"})
        ec2.delete_tags(Resources=[iid], Tags=[{"Key": "team"}, {"Key": "env", "Value": "not-this"}])
        tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]
        self.assertEqual({t["Key"] for t in tags}, {"Name", "env"})
        self.assertEqual(code_of(ec2.create_tags, Resources=[iid], Tags=[{"Key": "aws:x", "Value": "y"}]),
                         ("InvalidParameterValue", 400))
        self.assertEqual(code_of(ec2.create_tags, Resources=[iid, "i-0000beef"], Tags=[{"Key": "a", "Value": "b"}]),
                         ("InvalidInstanceID.NotFound", 400))
        self.assertNotIn("a", {t["Key"] for t in ec2.describe_tags()["Tags"]}, "one unknown id changes nothing")
        self.assertEqual(code_of(ec2.create_tags, Resources=[iid], Tags=[{"Key": "bell", "Value": "\x07"}]),
                         ("InvalidParameterValue", 400))

    def test_07_attributes_status_types_and_console(self):
        iid = Ec2.shared["id"]
        data = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
        self.assertIn("from-user-data", base64.b64decode(data).decode())
        self.assertEqual(ec2.describe_instance_attribute(InstanceId=iid, Attribute="instanceType")["InstanceType"]["Value"], "t2.micro")
        self.assertEqual(code_of(ec2.describe_instance_attribute, InstanceId=iid, Attribute="colour"),
                         ("InvalidParameterValue", 400))
        ec2.modify_instance_attribute(InstanceId=iid, DisableApiTermination={"Value": True})
        self.assertTrue(ec2.describe_instance_attribute(InstanceId=iid, Attribute="disableApiTermination")["DisableApiTermination"]["Value"])
        self.assertEqual(code_of(ec2.terminate_instances, InstanceIds=[iid]), ("OperationNotPermitted", 400))
        with self.assertRaises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(f"{ENDPOINT}/api/instances/{iid}", method="DELETE"))
        self.assertEqual(refused.exception.code, 409, "the REST API honours the protection too")
        ec2.modify_instance_attribute(InstanceId=iid, DisableApiTermination={"Value": False})
        # issue 16: status checks. boto3's waiter follows the check until it is ok.
        ec2.get_waiter("instance_status_ok").wait(InstanceIds=[iid], WaiterConfig={"Delay": 2, "MaxAttempts": 150})
        statuses = ec2.describe_instance_status(InstanceIds=[iid])["InstanceStatuses"]
        self.assertEqual(statuses[0]["InstanceState"]["Name"], "running")
        self.assertEqual(statuses[0]["InstanceStatus"]["Status"], "ok")
        self.assertEqual(statuses[0]["InstanceStatus"]["Details"], [{"Name": "reachability", "Status": "passed"}])
        self.assertEqual(statuses[0]["SystemStatus"]["Status"], "ok")
        credits = ec2.describe_instance_credit_specifications(InstanceIds=[iid])["InstanceCreditSpecifications"]
        self.assertEqual(credits, [{"InstanceId": iid, "CpuCredits": "standard"}])
        types = {t["InstanceType"]: t for t in ec2.describe_instance_types()["InstanceTypes"]}
        for t in rest("/instance-types"):
            self.assertEqual(types[t["name"]]["VCpuInfo"]["DefaultVCpus"], t["vcpus"])
            self.assertEqual(types[t["name"]]["MemoryInfo"]["SizeInMiB"], t["memory_mib"])
        self.assertEqual(len(types), 5)
        console = ec2.get_console_output(InstanceId=iid)
        self.assertTrue(console["Output"], "boto3 decodes the base64 console")

    def test_08_stop_start_reboot_terminate(self):
        iid, ip = Ec2.shared["id"], Ec2.shared["ip"]
        self.assertEqual(code_of(ec2.stop_instances, InstanceIds=[iid], Hibernate=True), ("UnsupportedOperation", 400))
        stopping = aws("stop-instances", "--instance-ids", iid)["StoppingInstances"][0]
        self.assertEqual((stopping["PreviousState"]["Name"], stopping["CurrentState"]["Name"]), ("running", "stopping"))
        ec2.get_waiter("instance_stopped").wait(InstanceIds=[iid], WaiterConfig={"Delay": 2, "MaxAttempts": 120})
        again = ec2.stop_instances(InstanceIds=[iid])["StoppingInstances"][0]
        self.assertEqual(again["CurrentState"]["Name"], "stopped", "stopping a stopped instance is fine")
        started = ec2.start_instances(InstanceIds=[iid])["StartingInstances"][0]
        self.assertEqual((started["PreviousState"]["Name"], started["CurrentState"]["Name"]), ("stopped", "pending"))
        ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig={"Delay": 2, "MaxAttempts": 150})
        back = wait("the address after start", lambda: instance(iid).get("PrivateIpAddress"))
        self.assertEqual(back, ip, "the same address after a stop and start")
        self.assertEqual(ec2.start_instances(InstanceIds=[iid])["StartingInstances"][0]["CurrentState"]["Name"], "running")
        # That the guest really reboots is shown over REST (tests/bench_instances.rs); here,
        # that EC2's call is taken and the instance stays running.
        self.assertEqual(ec2.reboot_instances(InstanceIds=[iid])["ResponseMetadata"]["HTTPStatusCode"], 200)
        wait("running after the reboot", lambda: rest(f"/instances/{iid}")["task"] is None)
        self.assertEqual(instance(iid)["State"]["Name"], "running")
        ec2.create_tags(Resources=[iid], Tags=[{"Key": "scratch", "Value": "x"}])
        ec2.delete_tags(Resources=[iid])
        self.assertEqual(ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"], [],
                         "DeleteTags without tags removes them all, Name too")
        # An id given twice is one instance: terminated once, answered once.
        gone = ec2.terminate_instances(InstanceIds=[iid, iid])["TerminatingInstances"]
        self.assertEqual(len(gone), 1)
        self.assertEqual(gone[0]["CurrentState"], {"Code": 32, "Name": "shutting-down"})
        again = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]
        self.assertIn(again["CurrentState"]["Name"], ("shutting-down", "terminated"), "terminating twice is fine")
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig={"Delay": 2, "MaxAttempts": 120})
        listed = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"] if i["InstanceId"] == iid]
        self.assertEqual(listed[0]["State"]["Name"], "terminated", "still listed once terminated, as on AWS")
        self.assertEqual(code_of(ec2.start_instances, InstanceIds=[iid]), ("IncorrectInstanceState", 400))
        again = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]
        self.assertEqual(again["CurrentState"]["Name"], "terminated")

    def test_09_terraforms_call_sequence(self):
        """aws_key_pair + aws_instance, apply then destroy, with parameters as Terraform sends them."""
        _, public = keygen("terraform")
        ec2.import_key_pair(KeyName="tf-key", PublicKeyMaterial=public.encode(), TagSpecifications=[])
        ec2.describe_key_pairs(KeyNames=["tf-key"], IncludePublicKey=True)
        run = ec2.run_instances(
            ImageId=IMAGE, InstanceType="t2.nano", KeyName="tf-key", MinCount=1, MaxCount=1,
            ClientToken="terraform-20261126000000000000000001", EbsOptimized=False,
            Monitoring={"Enabled": False}, Placement={"AvailabilityZone": "", "Tenancy": "default"},
            CreditSpecification={"CpuCredits": "standard"},
            MetadataOptions={"HttpEndpoint": "enabled", "HttpTokens": "optional", "HttpPutResponseHopLimit": 1},
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "tf"}]}],
        )
        iid = run["Instances"][0]["InstanceId"]
        wait("running", lambda: instance(iid)["State"]["Name"] == "running", every=2)
        ec2.describe_instance_types(InstanceTypes=["t2.nano"])
        for attribute in ["disableApiTermination", "disableApiStop", "instanceInitiatedShutdownBehavior", "userData"]:
            ec2.describe_instance_attribute(InstanceId=iid, Attribute=attribute)
        ec2.describe_instance_credit_specifications(InstanceIds=[iid])
        ec2.modify_instance_attribute(InstanceId=iid, DisableApiStop={"Value": False})
        ec2.terminate_instances(InstanceIds=[iid])
        wait("terminated", lambda: instance(iid)["State"]["Name"] == "terminated", every=2)
        ec2.delete_key_pair(KeyName="tf-key")

    def test_10_a_run_takes_what_the_host_can_hold_down_to_mincount(self):
        # The service's network has three addresses (tests/bench_ec2.rs).
        before = {i["id"] for i in rest("/instances?include_terminated=true")}
        code = code_of(ec2.run_instances, ImageId=IMAGE, InstanceType="t2.nano", MinCount=4, MaxCount=5)
        self.assertEqual(code, ("InsufficientInstanceCapacity", 500))
        taken_back = [i for i in rest("/instances?include_terminated=true") if i["id"] not in before]
        self.assertEqual(len(taken_back), 3, "three were made on the way, then taken back")
        self.assertTrue(all(i["state"] in ("terminated",) or i["task"] == "terminating" for i in taken_back), taken_back)
        for i in taken_back:
            wait("the refused run taken back", lambda i=i: rest(f"/instances/{i['id']}")["state"] == "terminated")
        run = ec2.run_instances(ImageId=IMAGE, InstanceType="t2.nano", MinCount=1, MaxCount=50)
        ids = [i["InstanceId"] for i in run["Instances"]]
        self.assertEqual(len(ids), 3, "as many as there are addresses")
        self.assertEqual([i["AmiLaunchIndex"] for i in run["Instances"]], [0, 1, 2])
        reservation = ec2.describe_instances(Filters=[{"Name": "reservation-id", "Values": [run["ReservationId"]]}])
        self.assertEqual(len(reservation["Reservations"][0]["Instances"]), 3)
        ec2.terminate_instances(InstanceIds=ids)
        ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig={"Delay": 2, "MaxAttempts": 120})

    def test_99_every_action_answered_per_botocores_model(self):
        expected = {
            "RunInstances", "DescribeInstances", "StartInstances", "StopInstances", "RebootInstances",
            "TerminateInstances", "DescribeInstanceStatus", "DescribeInstanceAttribute", "ModifyInstanceAttribute",
            "DescribeInstanceCreditSpecifications", "DescribeInstanceTypes", "GetConsoleOutput", "ImportKeyPair",
            "CreateKeyPair", "DescribeKeyPairs", "DeleteKeyPair", "DescribeImages", "DescribeRegions",
            "DescribeAvailabilityZones", "CreateTags", "DeleteTags", "DescribeTags",
        }
        self.assertEqual(expected - set(model_check.checked), set(), "actions never checked against the model")


if __name__ == "__main__":
    unittest.main()
