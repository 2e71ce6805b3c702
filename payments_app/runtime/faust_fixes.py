"""Where Faust or aiokafka do not do what the ledger needs, the smallest change that does; each names its cause.

* The worker's consumer must read only committed records: relays reach the transactions topic inside the ledger's
  transactions, and a fenced worker's aborted relays must never be applied. Faust reads committed records only
  under `processing_guarantee="exactly_once"`, which also swaps its producer for a per-partition transactional
  one that has open bugs (faust-streaming issues 177, 323, 517). The ledger runs its own transactions
  (`runtime.kafka_session`), so only the isolation level is taken over here.
* The ledger keeps no Faust table, and Faust then falls back to aiokafka's round-robin assignor, which does not
  publish each member's URL. Faust's own assignor does, and the web views route reads with it.
* aiokafka 0.14.0: `_wait_on_metadata` returns early for a topic already in the cluster metadata without adding it
  to the tracked topics; once the client tracks any topic, every refresh asks for those alone and replaces the
  whole partition map, so an untracked topic vanishes and sends to it wait forever (seen as a changelog batch with
  no leader, waiting forever). A producer therefore tracks every topic it writes from the start.
* Static group membership (KIP-345): a worker keeps its `group.instance.id` across restarts, so one that was
  SIGKILLed and started again takes its own place back at once instead of waiting for the group to expire the dead
  incarnation (the session timeout). aiokafka 0.14.0 then never leaves the group on a clean stop (it knows only
  LeaveGroup v0-v1, which cannot name an instance), which would make every clean leave wait for the session timeout
  too; the consumer here sends LeaveGroup v3 with its instance id.
* aiokafka 0.14.0: a request that times out closes its connection but keeps the cluster metadata, so the next
  request goes to the same node. A paused broker still accepts TCP connections (the kernel answers for it), so every
  client kept asking it (a consumer's fetches, a reader's offsets) long after the controller had moved its
  partitions' leadership away. Java's client asks for fresh metadata after every timed-out request; so does every
  aiokafka client here (`refresh_metadata_after_timeouts`).
* aiokafka 0.14.0 asks only the brokers its metadata lists for fresh metadata. A client that learnt its metadata
  while two of three nodes were down lists only the third; when that one died, it asked it forever, though the
  other two were back. Here a refresh that no listed broker answers goes to the bootstrap servers, as Java's
  `metadata.recovery.strategy=rebootstrap` does (KIP-899).
* Faust asks only the first broker of its client's metadata which node creates topics, and a failure there stops
  the worker: a worker started while that node was down exited at once, again and again. Here the first broker that
  answers is asked, and a cluster with none answering is waited out (`LedgerTransport._get_controller_node`).
* The consumer's heartbeats and joins renew this worker's group lease (`runtime.lease`), which aiokafka does not
  expose: reads of local partitions stop when it runs out. A completed join also records the generation and member
  id the assignment was given to, before the assignment is announced: the ledger commits under them
  (`runtime.txn_offsets`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.conn import create_conn
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.errors import KafkaError, NodeNotReadyError, RequestTimedOutError
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.types import Array, Int16, Int32, Schema, String
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service

from payments_app.runtime.broker_waits import passes, until_answered
from payments_app.runtime.lease import GroupLease
from payments_app.runtime.txn_offsets import GroupMember

READ_COMMITTED = "read_committed"
log = logging.getLogger(__name__)


MEMBER = (("member_id", String("utf-8")), ("group_instance_id", String("utf-8")))


class LeaveGroupResponse_v3(Response):
    API_KEY = 13
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("members", Array(*MEMBER, ("error_code", Int16))),
    )


class LeaveGroupRequest_v3(RequestStruct):
    API_KEY = 13
    API_VERSION = 3
    RESPONSE_TYPE = LeaveGroupResponse_v3
    SCHEMA = Schema(("group", String("utf-8")), ("members", Array(*MEMBER)))


class StaticLeaveGroupRequest(Request[LeaveGroupRequest_v3]):
    API_KEY = 13

    def __init__(self, group: str, member_id: str, instance_id: str) -> None:
        self._group = group
        self._member_id = member_id
        self._instance_id = instance_id

    def build(self, request_struct_class: type[LeaveGroupRequest_v3]) -> LeaveGroupRequest_v3:
        return request_struct_class(self._group, [(self._member_id, self._instance_id)])


async def leave_group(coordinator: GroupCoordinator) -> None:
    """What aiokafka's `_maybe_leave_group` does, for a static member too: one attempt, then forget the generation."""
    if coordinator.generation > 0:
        request = StaticLeaveGroupRequest(coordinator.group_id, coordinator.member_id, coordinator._group_instance_id)
        try:
            response = await coordinator._send_req(request)
        except KafkaError as exc:
            log.warning("LeaveGroup failed (the group drops this member after its session timeout): %s", exc)
        else:
            errors = [response.error_code, *(member[2] for member in response.members)]
            log.info("left the consumer group as %s (error codes %s)", coordinator._group_instance_id, errors)
    coordinator.reset_generation()


def refresh_metadata_after_timeouts() -> None:
    """Every aiokafka client in this process asks for fresh metadata when a request times out, and asks its
    bootstrap servers when none of the brokers it knows answers (see the module docstring); the refresh runs in
    the background. Idempotent."""
    if getattr(AIOKafkaClient.send, "refreshes_metadata", False):
        return
    send, metadata_update = AIOKafkaClient.send, AIOKafkaClient._metadata_update

    async def metadata_update_or_rebootstrap(self: AIOKafkaClient, cluster: Any, topics: Any) -> bool:
        if await metadata_update(self, cluster, topics):
            return True
        for host, port, _ in self.hosts:
            try:
                conn = await create_conn(  # with the settings `AIOKafkaClient.bootstrap` connects with
                    host,
                    port,
                    client_id=self._client_id,
                    request_timeout_ms=self._request_timeout_ms,
                    ssl_context=self._ssl_context,
                    security_protocol=self._security_protocol,
                    sasl_mechanism=self._sasl_mechanism,
                    sasl_plain_username=self._sasl_plain_username,
                    sasl_plain_password=self._sasl_plain_password,
                    sasl_kerberos_service_name=self._sasl_kerberos_service_name,
                    sasl_kerberos_domain_name=self._sasl_kerberos_domain_name,
                    sasl_oauth_token_provider=self._sasl_oauth_token_provider,
                )
            except (OSError, KafkaError, TimeoutError):
                continue
            try:
                metadata = await conn.send(MetadataRequest(list(topics) if topics else None))
            except (KafkaError, TimeoutError):
                continue
            finally:
                conn.close()
            if metadata.brokers:
                log.warning("no known broker answered; metadata from the bootstrap server %s:%s", host, port)
                cluster.update_metadata(metadata)
                return True
        return False

    async def send_refreshing(
        self: AIOKafkaClient, node_id: Any, request: Any, *, group: ConnectionGroup = ConnectionGroup.DEFAULT
    ) -> Any:
        try:
            return await send(self, node_id, request, group=group)
        except RequestTimedOutError:
            self.force_metadata_update()
            raise

    send_refreshing.refreshes_metadata = True  # type: ignore[attr-defined]
    AIOKafkaClient.send = send_refreshing  # type: ignore[method-assign]
    AIOKafkaClient._metadata_update = metadata_update_or_rebootstrap  # type: ignore[method-assign]


async def track_topics(producer: AIOKafkaProducer, topics: list[str]) -> None:
    """Make the producer's metadata refreshes always include `topics` (see the module docstring)."""
    await producer.client.set_topics(topics)


class LedgerConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads both when it starts the consumer (fetcher and coordinator), after this constructor.
        consumer._isolation_level = READ_COMMITTED
        consumer._partition_assignment_strategy = (self.app.assignor,)
        consumer._group_instance_id = self.app.instance_id
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        coordinator = self._ensure_consumer()._coordinator
        coordinator._maybe_leave_group = lambda: leave_group(coordinator)
        renew_lease_on_heartbeats(coordinator, self.app.lease)


def renew_lease_on_heartbeats(coordinator: GroupCoordinator, lease: GroupLease) -> None:
    """Renew the group lease with every heartbeat the coordinator accepts and every completed join, which also
    names the member the assignment went to."""
    heartbeat, join_complete = coordinator._do_heartbeat, coordinator._on_join_complete

    async def renewing_heartbeat() -> bool:
        sent_at = time.monotonic()
        accepted = await heartbeat()
        if accepted:
            lease.renewed(sent_at)
        return accepted

    async def renewing_join_complete(generation: int, member_id: str, *args: Any) -> None:
        member = GroupMember(coordinator.group_id, generation, member_id, coordinator._group_instance_id)
        lease.joined(member, time.monotonic())
        await join_complete(generation, member_id, *args)

    coordinator._do_heartbeat = renewing_heartbeat
    coordinator._on_join_complete = renewing_join_complete


class LedgerConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return LedgerConsumerThread(self, loop=self.loop, beacon=self.beacon)


class LedgerTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with the consumer above. Its app has a `lease` (`runtime.lease.GroupLease`) and an
    `instance_id` (the static membership id)."""

    Consumer = LedgerConsumer

    async def _get_controller_node(self, owner: Service, client: AIOKafkaClient, timeout: int = 30000) -> int | None:
        """The node to send a topic's creation to: asked of the first broker that answers (see the module
        docstring). `timeout` is Faust's, in ms."""

        async def ask_any_broker() -> int:
            for broker in client.cluster.brokers():
                try:
                    response = await client.send(broker.nodeId, MetadataRequest([]))
                except KafkaError as exc:
                    if not passes(exc):
                        raise
                    continue
                return int(response.controller_id)
            client.force_metadata_update()
            raise NodeNotReadyError("no broker of the cluster's metadata answers")

        asked = until_answered(ask_any_broker, "the controller's id", client, within_s=timeout / 1000)
        waited = await owner.wait(asked, timeout=timeout / 1000)
        return None if waited.stopped else int(waited.result)
