import subprocess
import threading
import time

import pytest

from tests.multinode import YardFactory

pytestmark = [pytest.mark.server, pytest.mark.couchdb]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("multinode_couch", ["couchdb-cluster"], indirect=True)
def test_probe(yard_factory: YardFactory) -> None:
    for k in range(8):
        yard = yard_factory()
        node = yard.node("n2")
        dump: list[str] = []

        def spy() -> None:
            time.sleep(2.5)
            out = subprocess.run(
                ["/work/wt/startrate/.venv/bin/py-spy", "dump", "--pid", str(node.proc.pid)],
                capture_output=True, text=True, check=False,
            )
            dump.append(out.stdout + out.stderr)

        t = threading.Thread(target=spy)
        t.start()
        t0 = time.monotonic()
        with node.client() as client:
            answer = client.post("/runs", json={"agent": "echo", "input_dict": {}})
        took = time.monotonic() - t0
        t.join()
        print(k, answer.status_code, round(took, 3))
        if took > 2.5:
            print(dump[0])
            break
        yard.close()
