from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FrameFate(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAME_FATE_UNSPECIFIED: _ClassVar[FrameFate]
    FRAME_FATE_PREDICTED: _ClassVar[FrameFate]
    FRAME_FATE_LOST: _ClassVar[FrameFate]
    FRAME_FATE_ERROR: _ClassVar[FrameFate]
FRAME_FATE_UNSPECIFIED: FrameFate
FRAME_FATE_PREDICTED: FrameFate
FRAME_FATE_LOST: FrameFate
FRAME_FATE_ERROR: FrameFate

class SymbolFrame(_message.Message):
    __slots__ = ("link_id", "sequence", "image_id", "num_symbols", "symbols", "pilots", "config_version", "sent_unix_ns", "label", "tx_snr_db", "encode_seconds", "expires_unix_ns")
    LINK_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    PILOTS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TX_SNR_DB_FIELD_NUMBER: _ClassVar[int]
    ENCODE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    link_id: str
    sequence: int
    image_id: str
    num_symbols: int
    symbols: bytes
    pilots: bytes
    config_version: int
    sent_unix_ns: int
    label: int
    tx_snr_db: float
    encode_seconds: float
    expires_unix_ns: int
    def __init__(self, link_id: _Optional[str] = ..., sequence: _Optional[int] = ..., image_id: _Optional[str] = ..., num_symbols: _Optional[int] = ..., symbols: _Optional[bytes] = ..., pilots: _Optional[bytes] = ..., config_version: _Optional[int] = ..., sent_unix_ns: _Optional[int] = ..., label: _Optional[int] = ..., tx_snr_db: _Optional[float] = ..., encode_seconds: _Optional[float] = ..., expires_unix_ns: _Optional[int] = ...) -> None: ...

class ChannelState(_message.Message):
    __slots__ = ("config_version", "model", "snr_db", "n0", "gains", "received", "frame_lost", "channel_seconds")
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SNR_DB_FIELD_NUMBER: _ClassVar[int]
    N0_FIELD_NUMBER: _ClassVar[int]
    GAINS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    FRAME_LOST_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    config_version: int
    model: str
    snr_db: float
    n0: float
    gains: bytes
    received: bytes
    frame_lost: bool
    channel_seconds: float
    def __init__(self, config_version: _Optional[int] = ..., model: _Optional[str] = ..., snr_db: _Optional[float] = ..., n0: _Optional[float] = ..., gains: _Optional[bytes] = ..., received: _Optional[bytes] = ..., frame_lost: _Optional[bool] = ..., channel_seconds: _Optional[float] = ...) -> None: ...

class ChannelFrame(_message.Message):
    __slots__ = ("frame", "channel")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    frame: SymbolFrame
    channel: ChannelState
    def __init__(self, frame: _Optional[_Union[SymbolFrame, _Mapping]] = ..., channel: _Optional[_Union[ChannelState, _Mapping]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("encode_seconds", "channel_seconds", "decode_seconds", "end_to_end_seconds")
    ENCODE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DECODE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_TO_END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    encode_seconds: float
    channel_seconds: float
    decode_seconds: float
    end_to_end_seconds: float
    def __init__(self, encode_seconds: _Optional[float] = ..., channel_seconds: _Optional[float] = ..., decode_seconds: _Optional[float] = ..., end_to_end_seconds: _Optional[float] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("class_index", "class_name", "probabilities", "estimated_snr_db", "channel_snr_db", "channel_knowledge", "correct")
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_SNR_DB_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_SNR_DB_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_KNOWLEDGE_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    class_index: int
    class_name: str
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    estimated_snr_db: float
    channel_snr_db: float
    channel_knowledge: str
    correct: bool
    def __init__(self, class_index: _Optional[int] = ..., class_name: _Optional[str] = ..., probabilities: _Optional[_Iterable[float]] = ..., estimated_snr_db: _Optional[float] = ..., channel_snr_db: _Optional[float] = ..., channel_knowledge: _Optional[str] = ..., correct: _Optional[bool] = ...) -> None: ...

class FrameResult(_message.Message):
    __slots__ = ("link_id", "sequence", "image_id", "fate", "prediction", "error", "num_symbols", "tx_config_version", "channel_config_version", "timings", "tx_snr_db", "channel_model")
    LINK_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    FATE_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    NUM_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    TX_CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    TX_SNR_DB_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_MODEL_FIELD_NUMBER: _ClassVar[int]
    link_id: str
    sequence: int
    image_id: str
    fate: FrameFate
    prediction: Prediction
    error: str
    num_symbols: int
    tx_config_version: int
    channel_config_version: int
    timings: Timings
    tx_snr_db: float
    channel_model: str
    def __init__(self, link_id: _Optional[str] = ..., sequence: _Optional[int] = ..., image_id: _Optional[str] = ..., fate: _Optional[_Union[FrameFate, str]] = ..., prediction: _Optional[_Union[Prediction, _Mapping]] = ..., error: _Optional[str] = ..., num_symbols: _Optional[int] = ..., tx_config_version: _Optional[int] = ..., channel_config_version: _Optional[int] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., tx_snr_db: _Optional[float] = ..., channel_model: _Optional[str] = ...) -> None: ...
