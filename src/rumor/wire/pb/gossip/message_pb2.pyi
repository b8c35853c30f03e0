from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PullMsgType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNDEFINED: _ClassVar[PullMsgType]
    BLOCK_MSG: _ClassVar[PullMsgType]
    IDENTITY_MSG: _ClassVar[PullMsgType]
UNDEFINED: PullMsgType
BLOCK_MSG: PullMsgType
IDENTITY_MSG: PullMsgType

class Envelope(_message.Message):
    __slots__ = ("payload", "signature", "secret_envelope")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SECRET_ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    signature: bytes
    secret_envelope: SecretEnvelope
    def __init__(self, payload: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., secret_envelope: _Optional[_Union[SecretEnvelope, _Mapping]] = ...) -> None: ...

class SecretEnvelope(_message.Message):
    __slots__ = ("payload", "signature")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    signature: bytes
    def __init__(self, payload: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Secret(_message.Message):
    __slots__ = ("internalEndpoint",)
    INTERNALENDPOINT_FIELD_NUMBER: _ClassVar[int]
    internalEndpoint: str
    def __init__(self, internalEndpoint: _Optional[str] = ...) -> None: ...

class GossipMessage(_message.Message):
    __slots__ = ("nonce", "channel", "tag", "alive_msg", "mem_req", "mem_res", "data_msg", "hello", "data_dig", "data_req", "data_update", "empty", "conn", "state_info", "state_snapshot", "state_info_pull_req", "state_request", "state_response", "leadership_msg", "peer_identity", "ack", "privateReq", "privateRes", "private_data")
    class Tag(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNDEFINED: _ClassVar[GossipMessage.Tag]
        EMPTY: _ClassVar[GossipMessage.Tag]
        ORG_ONLY: _ClassVar[GossipMessage.Tag]
        CHAN_ONLY: _ClassVar[GossipMessage.Tag]
        CHAN_AND_ORG: _ClassVar[GossipMessage.Tag]
        CHAN_OR_ORG: _ClassVar[GossipMessage.Tag]
    UNDEFINED: GossipMessage.Tag
    EMPTY: GossipMessage.Tag
    ORG_ONLY: GossipMessage.Tag
    CHAN_ONLY: GossipMessage.Tag
    CHAN_AND_ORG: GossipMessage.Tag
    CHAN_OR_ORG: GossipMessage.Tag
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    ALIVE_MSG_FIELD_NUMBER: _ClassVar[int]
    MEM_REQ_FIELD_NUMBER: _ClassVar[int]
    MEM_RES_FIELD_NUMBER: _ClassVar[int]
    DATA_MSG_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    DATA_DIG_FIELD_NUMBER: _ClassVar[int]
    DATA_REQ_FIELD_NUMBER: _ClassVar[int]
    DATA_UPDATE_FIELD_NUMBER: _ClassVar[int]
    EMPTY_FIELD_NUMBER: _ClassVar[int]
    CONN_FIELD_NUMBER: _ClassVar[int]
    STATE_INFO_FIELD_NUMBER: _ClassVar[int]
    STATE_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    STATE_INFO_PULL_REQ_FIELD_NUMBER: _ClassVar[int]
    STATE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    STATE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    LEADERSHIP_MSG_FIELD_NUMBER: _ClassVar[int]
    PEER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    PRIVATEREQ_FIELD_NUMBER: _ClassVar[int]
    PRIVATERES_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_DATA_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    channel: bytes
    tag: GossipMessage.Tag
    alive_msg: AliveMessage
    mem_req: MembershipRequest
    mem_res: MembershipResponse
    data_msg: DataMessage
    hello: GossipHello
    data_dig: DataDigest
    data_req: DataRequest
    data_update: DataUpdate
    empty: Empty
    conn: ConnEstablish
    state_info: StateInfo
    state_snapshot: StateInfoSnapshot
    state_info_pull_req: StateInfoPullRequest
    state_request: RemoteStateRequest
    state_response: RemoteStateResponse
    leadership_msg: LeadershipMessage
    peer_identity: PeerIdentity
    ack: Acknowledgement
    privateReq: RemotePvtDataRequest
    privateRes: RemotePvtDataResponse
    private_data: PrivateDataMessage
    def __init__(self, nonce: _Optional[int] = ..., channel: _Optional[bytes] = ..., tag: _Optional[_Union[GossipMessage.Tag, str]] = ..., alive_msg: _Optional[_Union[AliveMessage, _Mapping]] = ..., mem_req: _Optional[_Union[MembershipRequest, _Mapping]] = ..., mem_res: _Optional[_Union[MembershipResponse, _Mapping]] = ..., data_msg: _Optional[_Union[DataMessage, _Mapping]] = ..., hello: _Optional[_Union[GossipHello, _Mapping]] = ..., data_dig: _Optional[_Union[DataDigest, _Mapping]] = ..., data_req: _Optional[_Union[DataRequest, _Mapping]] = ..., data_update: _Optional[_Union[DataUpdate, _Mapping]] = ..., empty: _Optional[_Union[Empty, _Mapping]] = ..., conn: _Optional[_Union[ConnEstablish, _Mapping]] = ..., state_info: _Optional[_Union[StateInfo, _Mapping]] = ..., state_snapshot: _Optional[_Union[StateInfoSnapshot, _Mapping]] = ..., state_info_pull_req: _Optional[_Union[StateInfoPullRequest, _Mapping]] = ..., state_request: _Optional[_Union[RemoteStateRequest, _Mapping]] = ..., state_response: _Optional[_Union[RemoteStateResponse, _Mapping]] = ..., leadership_msg: _Optional[_Union[LeadershipMessage, _Mapping]] = ..., peer_identity: _Optional[_Union[PeerIdentity, _Mapping]] = ..., ack: _Optional[_Union[Acknowledgement, _Mapping]] = ..., privateReq: _Optional[_Union[RemotePvtDataRequest, _Mapping]] = ..., privateRes: _Optional[_Union[RemotePvtDataResponse, _Mapping]] = ..., private_data: _Optional[_Union[PrivateDataMessage, _Mapping]] = ...) -> None: ...

class StateInfo(_message.Message):
    __slots__ = ("timestamp", "pki_id", "channel_MAC", "properties")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PKI_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_MAC_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    timestamp: PeerTime
    pki_id: bytes
    channel_MAC: bytes
    properties: Properties
    def __init__(self, timestamp: _Optional[_Union[PeerTime, _Mapping]] = ..., pki_id: _Optional[bytes] = ..., channel_MAC: _Optional[bytes] = ..., properties: _Optional[_Union[Properties, _Mapping]] = ...) -> None: ...

class Properties(_message.Message):
    __slots__ = ("ledger_height", "left_channel", "chaincodes")
    LEDGER_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    LEFT_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CHAINCODES_FIELD_NUMBER: _ClassVar[int]
    ledger_height: int
    left_channel: bool
    chaincodes: _containers.RepeatedCompositeFieldContainer[Chaincode]
    def __init__(self, ledger_height: _Optional[int] = ..., left_channel: _Optional[bool] = ..., chaincodes: _Optional[_Iterable[_Union[Chaincode, _Mapping]]] = ...) -> None: ...

class StateInfoSnapshot(_message.Message):
    __slots__ = ("elements",)
    ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    elements: _containers.RepeatedCompositeFieldContainer[Envelope]
    def __init__(self, elements: _Optional[_Iterable[_Union[Envelope, _Mapping]]] = ...) -> None: ...

class StateInfoPullRequest(_message.Message):
    __slots__ = ("channel_MAC",)
    CHANNEL_MAC_FIELD_NUMBER: _ClassVar[int]
    channel_MAC: bytes
    def __init__(self, channel_MAC: _Optional[bytes] = ...) -> None: ...

class ConnEstablish(_message.Message):
    __slots__ = ("pki_id", "identity", "tls_cert_hash", "probe")
    PKI_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TLS_CERT_HASH_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    pki_id: bytes
    identity: bytes
    tls_cert_hash: bytes
    probe: bool
    def __init__(self, pki_id: _Optional[bytes] = ..., identity: _Optional[bytes] = ..., tls_cert_hash: _Optional[bytes] = ..., probe: _Optional[bool] = ...) -> None: ...

class PeerIdentity(_message.Message):
    __slots__ = ("pki_id", "cert", "metadata")
    PKI_ID_FIELD_NUMBER: _ClassVar[int]
    CERT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    pki_id: bytes
    cert: bytes
    metadata: bytes
    def __init__(self, pki_id: _Optional[bytes] = ..., cert: _Optional[bytes] = ..., metadata: _Optional[bytes] = ...) -> None: ...

class DataRequest(_message.Message):
    __slots__ = ("nonce", "digests", "msg_type")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    MSG_TYPE_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    digests: _containers.RepeatedScalarFieldContainer[bytes]
    msg_type: PullMsgType
    def __init__(self, nonce: _Optional[int] = ..., digests: _Optional[_Iterable[bytes]] = ..., msg_type: _Optional[_Union[PullMsgType, str]] = ...) -> None: ...

class GossipHello(_message.Message):
    __slots__ = ("nonce", "metadata", "msg_type")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MSG_TYPE_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    metadata: bytes
    msg_type: PullMsgType
    def __init__(self, nonce: _Optional[int] = ..., metadata: _Optional[bytes] = ..., msg_type: _Optional[_Union[PullMsgType, str]] = ...) -> None: ...

class DataUpdate(_message.Message):
    __slots__ = ("nonce", "data", "msg_type")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    MSG_TYPE_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    data: _containers.RepeatedCompositeFieldContainer[Envelope]
    msg_type: PullMsgType
    def __init__(self, nonce: _Optional[int] = ..., data: _Optional[_Iterable[_Union[Envelope, _Mapping]]] = ..., msg_type: _Optional[_Union[PullMsgType, str]] = ...) -> None: ...

class DataDigest(_message.Message):
    __slots__ = ("nonce", "digests", "msg_type", "advertise_ttl")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    MSG_TYPE_FIELD_NUMBER: _ClassVar[int]
    ADVERTISE_TTL_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    digests: _containers.RepeatedScalarFieldContainer[bytes]
    msg_type: PullMsgType
    advertise_ttl: int
    def __init__(self, nonce: _Optional[int] = ..., digests: _Optional[_Iterable[bytes]] = ..., msg_type: _Optional[_Union[PullMsgType, str]] = ..., advertise_ttl: _Optional[int] = ...) -> None: ...

class DataMessage(_message.Message):
    __slots__ = ("payload", "push_ttl", "advertise_ttl")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PUSH_TTL_FIELD_NUMBER: _ClassVar[int]
    ADVERTISE_TTL_FIELD_NUMBER: _ClassVar[int]
    payload: Payload
    push_ttl: int
    advertise_ttl: int
    def __init__(self, payload: _Optional[_Union[Payload, _Mapping]] = ..., push_ttl: _Optional[int] = ..., advertise_ttl: _Optional[int] = ...) -> None: ...

class Payload(_message.Message):
    __slots__ = ("seq_num", "data", "private_data")
    SEQ_NUM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_DATA_FIELD_NUMBER: _ClassVar[int]
    seq_num: int
    data: bytes
    private_data: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, seq_num: _Optional[int] = ..., data: _Optional[bytes] = ..., private_data: _Optional[_Iterable[bytes]] = ...) -> None: ...

class AliveMessage(_message.Message):
    __slots__ = ("membership", "timestamp", "identity")
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    membership: Member
    timestamp: PeerTime
    identity: bytes
    def __init__(self, membership: _Optional[_Union[Member, _Mapping]] = ..., timestamp: _Optional[_Union[PeerTime, _Mapping]] = ..., identity: _Optional[bytes] = ...) -> None: ...

class LeadershipMessage(_message.Message):
    __slots__ = ("pki_id", "timestamp", "is_declaration")
    PKI_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    IS_DECLARATION_FIELD_NUMBER: _ClassVar[int]
    pki_id: bytes
    timestamp: PeerTime
    is_declaration: bool
    def __init__(self, pki_id: _Optional[bytes] = ..., timestamp: _Optional[_Union[PeerTime, _Mapping]] = ..., is_declaration: _Optional[bool] = ...) -> None: ...

class PeerTime(_message.Message):
    __slots__ = ("inc_num", "seq_num")
    INC_NUM_FIELD_NUMBER: _ClassVar[int]
    SEQ_NUM_FIELD_NUMBER: _ClassVar[int]
    inc_num: int
    seq_num: int
    def __init__(self, inc_num: _Optional[int] = ..., seq_num: _Optional[int] = ...) -> None: ...

class MembershipRequest(_message.Message):
    __slots__ = ("self_information", "known")
    SELF_INFORMATION_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    self_information: Envelope
    known: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, self_information: _Optional[_Union[Envelope, _Mapping]] = ..., known: _Optional[_Iterable[bytes]] = ...) -> None: ...

class MembershipResponse(_message.Message):
    __slots__ = ("alive", "dead")
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    alive: _containers.RepeatedCompositeFieldContainer[Envelope]
    dead: _containers.RepeatedCompositeFieldContainer[Envelope]
    def __init__(self, alive: _Optional[_Iterable[_Union[Envelope, _Mapping]]] = ..., dead: _Optional[_Iterable[_Union[Envelope, _Mapping]]] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("endpoint", "metadata", "pki_id")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PKI_ID_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    metadata: bytes
    pki_id: bytes
    def __init__(self, endpoint: _Optional[str] = ..., metadata: _Optional[bytes] = ..., pki_id: _Optional[bytes] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RemoteStateRequest(_message.Message):
    __slots__ = ("start_seq_num", "end_seq_num")
    START_SEQ_NUM_FIELD_NUMBER: _ClassVar[int]
    END_SEQ_NUM_FIELD_NUMBER: _ClassVar[int]
    start_seq_num: int
    end_seq_num: int
    def __init__(self, start_seq_num: _Optional[int] = ..., end_seq_num: _Optional[int] = ...) -> None: ...

class RemoteStateResponse(_message.Message):
    __slots__ = ("payloads",)
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    payloads: _containers.RepeatedCompositeFieldContainer[Payload]
    def __init__(self, payloads: _Optional[_Iterable[_Union[Payload, _Mapping]]] = ...) -> None: ...

class RemotePvtDataRequest(_message.Message):
    __slots__ = ("digests",)
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    digests: _containers.RepeatedCompositeFieldContainer[PvtDataDigest]
    def __init__(self, digests: _Optional[_Iterable[_Union[PvtDataDigest, _Mapping]]] = ...) -> None: ...

class PvtDataDigest(_message.Message):
    __slots__ = ("tx_id", "namespace", "collection", "block_seq", "seq_in_block")
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SEQ_FIELD_NUMBER: _ClassVar[int]
    SEQ_IN_BLOCK_FIELD_NUMBER: _ClassVar[int]
    tx_id: str
    namespace: str
    collection: str
    block_seq: int
    seq_in_block: int
    def __init__(self, tx_id: _Optional[str] = ..., namespace: _Optional[str] = ..., collection: _Optional[str] = ..., block_seq: _Optional[int] = ..., seq_in_block: _Optional[int] = ...) -> None: ...

class RemotePvtDataResponse(_message.Message):
    __slots__ = ("elements",)
    ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    elements: _containers.RepeatedCompositeFieldContainer[PvtDataElement]
    def __init__(self, elements: _Optional[_Iterable[_Union[PvtDataElement, _Mapping]]] = ...) -> None: ...

class PvtDataElement(_message.Message):
    __slots__ = ("digest", "payload")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    digest: PvtDataDigest
    payload: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, digest: _Optional[_Union[PvtDataDigest, _Mapping]] = ..., payload: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PrivateDataMessage(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: PrivatePayload
    def __init__(self, payload: _Optional[_Union[PrivatePayload, _Mapping]] = ...) -> None: ...

class PrivatePayload(_message.Message):
    __slots__ = ("collection_name", "namespace", "tx_id", "private_rwset", "private_sim_height", "collection_configs")
    COLLECTION_NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_RWSET_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_SIM_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_CONFIGS_FIELD_NUMBER: _ClassVar[int]
    collection_name: str
    namespace: str
    tx_id: str
    private_rwset: bytes
    private_sim_height: int
    collection_configs: bytes
    def __init__(self, collection_name: _Optional[str] = ..., namespace: _Optional[str] = ..., tx_id: _Optional[str] = ..., private_rwset: _Optional[bytes] = ..., private_sim_height: _Optional[int] = ..., collection_configs: _Optional[bytes] = ...) -> None: ...

class Acknowledgement(_message.Message):
    __slots__ = ("error",)
    ERROR_FIELD_NUMBER: _ClassVar[int]
    error: str
    def __init__(self, error: _Optional[str] = ...) -> None: ...

class Chaincode(_message.Message):
    __slots__ = ("name", "version", "metadata")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    metadata: bytes
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., metadata: _Optional[bytes] = ...) -> None: ...
