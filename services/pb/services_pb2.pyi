from services.pb import frame_pb2 as _frame_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Image(_message.Message):
    __slots__ = ("encoded", "raw")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    raw: RawImage
    def __init__(self, encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ...) -> None: ...

class RawImage(_message.Message):
    __slots__ = ("height", "width", "channels", "data")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    channels: int
    data: bytes
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("image_id", "image", "label")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    image: Image
    label: int
    def __init__(self, image_id: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., label: _Optional[int] = ...) -> None: ...

class LengthPolicy(_message.Message):
    __slots__ = ("mode", "fixed_length", "target_accuracy", "version", "confidence")
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MODE_UNSPECIFIED: _ClassVar[LengthPolicy.Mode]
        MODE_FIXED: _ClassVar[LengthPolicy.Mode]
        MODE_ADAPTIVE: _ClassVar[LengthPolicy.Mode]
    MODE_UNSPECIFIED: LengthPolicy.Mode
    MODE_FIXED: LengthPolicy.Mode
    MODE_ADAPTIVE: LengthPolicy.Mode
    MODE_FIELD_NUMBER: _ClassVar[int]
    FIXED_LENGTH_FIELD_NUMBER: _ClassVar[int]
    TARGET_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    mode: LengthPolicy.Mode
    fixed_length: int
    target_accuracy: float
    version: int
    confidence: float
    def __init__(self, mode: _Optional[_Union[LengthPolicy.Mode, str]] = ..., fixed_length: _Optional[int] = ..., target_accuracy: _Optional[float] = ..., version: _Optional[int] = ..., confidence: _Optional[float] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("split", "num_images", "rate", "link_id")
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    LINK_ID_FIELD_NUMBER: _ClassVar[int]
    split: str
    num_images: int
    rate: float
    link_id: str
    def __init__(self, split: _Optional[str] = ..., num_images: _Optional[int] = ..., rate: _Optional[float] = ..., link_id: _Optional[str] = ...) -> None: ...

class RunStatus(_message.Message):
    __slots__ = ("run_id", "state", "total", "sent", "predicted", "lost", "errors", "correct", "accuracy", "symbols_per_image", "per_snr", "error", "mean_end_to_end_seconds", "errors_by_code")
    class ErrorsByCodeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_PER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    PER_SNR_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MEAN_END_TO_END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_BY_CODE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    state: str
    total: int
    sent: int
    predicted: int
    lost: int
    errors: int
    correct: int
    accuracy: float
    symbols_per_image: float
    per_snr: _containers.RepeatedCompositeFieldContainer[SnrBinStats]
    error: str
    mean_end_to_end_seconds: float
    errors_by_code: _containers.ScalarMap[str, int]
    def __init__(self, run_id: _Optional[str] = ..., state: _Optional[str] = ..., total: _Optional[int] = ..., sent: _Optional[int] = ..., predicted: _Optional[int] = ..., lost: _Optional[int] = ..., errors: _Optional[int] = ..., correct: _Optional[int] = ..., accuracy: _Optional[float] = ..., symbols_per_image: _Optional[float] = ..., per_snr: _Optional[_Iterable[_Union[SnrBinStats, _Mapping]]] = ..., error: _Optional[str] = ..., mean_end_to_end_seconds: _Optional[float] = ..., errors_by_code: _Optional[_Mapping[str, int]] = ...) -> None: ...

class SnrBinStats(_message.Message):
    __slots__ = ("snr_db", "predicted", "correct", "accuracy")
    SNR_DB_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    snr_db: float
    predicted: int
    correct: int
    accuracy: float
    def __init__(self, snr_db: _Optional[float] = ..., predicted: _Optional[int] = ..., correct: _Optional[int] = ..., accuracy: _Optional[float] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class ChannelSettings(_message.Message):
    __slots__ = ("model", "snr_db", "fading", "k_factor", "erasure_prob", "frame_loss_prob", "seed", "delay_seconds", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SNR_DB_FIELD_NUMBER: _ClassVar[int]
    FADING_FIELD_NUMBER: _ClassVar[int]
    K_FACTOR_FIELD_NUMBER: _ClassVar[int]
    ERASURE_PROB_FIELD_NUMBER: _ClassVar[int]
    FRAME_LOSS_PROB_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    snr_db: float
    fading: str
    k_factor: float
    erasure_prob: float
    frame_loss_prob: float
    seed: int
    delay_seconds: float
    version: int
    def __init__(self, model: _Optional[str] = ..., snr_db: _Optional[float] = ..., fading: _Optional[str] = ..., k_factor: _Optional[float] = ..., erasure_prob: _Optional[float] = ..., frame_loss_prob: _Optional[float] = ..., seed: _Optional[int] = ..., delay_seconds: _Optional[float] = ..., version: _Optional[int] = ...) -> None: ...

class GetChannelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
