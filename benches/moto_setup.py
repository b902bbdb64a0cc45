"""Creates the relay's AWS resources on a moto emulator for the Lambda benchmark.

The table is created from template.yaml's own definition (so the two cannot drift), with four
queues and a secret holding the fixtures' API key. Prints `export NAME=value` lines for the
function's environment. Runs with the moto venv's python (boto3 and PyYAML come with moto).

    python benches/moto_setup.py http://127.0.0.1:PORT
"""

import json
import sys

import boto3
import yaml


class _Loader(yaml.SafeLoader):
    pass


def _tag(loader, suffix, node):
    # CloudFormation short tags (!Ref, !GetAtt, !Sub ...): their values do not matter here.
    return None


_Loader.add_multi_constructor("!", _tag)


def main(endpoint):
    kw = dict(
        endpoint_url=endpoint,
        region_name="eu-central-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with open("template.yaml") as f:
        template = yaml.load(f, Loader=_Loader)
    table = next(
        r["Properties"]
        for r in template["Resources"].values()
        if r.get("Type") == "AWS::DynamoDB::Table"
    )
    name = "relay-bench"
    ddb = boto3.client("dynamodb", **kw)
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=table["AttributeDefinitions"],
        KeySchema=table["KeySchema"],
        GlobalSecondaryIndexes=table["GlobalSecondaryIndexes"],
    )
    sqs = boto3.client("sqs", **kw)
    urls = {
        q: sqs.create_queue(QueueName=f"relay-bench-{q}")["QueueUrl"]
        for q in ("render", "dispatch", "render-dlq", "dispatch-dlq")
    }
    sm = boto3.client("secretsmanager", **kw)
    sm.create_secret(
        Name=name,
        SecretString=json.dumps(
            {
                "smartemailing": {"username": "bench@example.com", "api_key": "se-bench-key"},
                "api_keys": ["fixture-api-key"],
                "webhook_secrets": {"collector_token": "bench-token"},
            }
        ),
    )
    print(f"export TABLE_NAME={name}")
    print(f"export RENDER_QUEUE_URL={urls['render']}")
    print(f"export DISPATCH_QUEUE_URL={urls['dispatch']}")
    print(f"export RENDER_DLQ_URL={urls['render-dlq']}")
    print(f"export DISPATCH_DLQ_URL={urls['dispatch-dlq']}")
    print(f"export SECRET_ID={name}")


if __name__ == "__main__":
    main(sys.argv[1])
