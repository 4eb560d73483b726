"""SQLModel tables. Importing this package registers every table on SQLModel.metadata."""

from meiqia_app.models.activity import (
    BehaviorEvent,
    Conversation,
    Message,
    Note,
    Order,
    Product,
)
from meiqia_app.models.api import (
    ApiIdempotency,
    ApiKey,
    ExternalRef,
    IngestedEvent,
    WebhookDelivery,
    WebhookEndpoint,
)
from meiqia_app.models.audit import AuditEntry
from meiqia_app.models.auth import (
    LoginAddressThrottle,
    LoginChallenge,
    LoginThrottle,
    RecoveryCode,
    Role,
    Team,
    User,
    UserSession,
)
from meiqia_app.models.custom_field import CustomField
from meiqia_app.models.customer import Customer, CustomerSearch, FieldChange, OwnerChange
from meiqia_app.models.report import ReportDaily, ReportDirty, ReportLedger
from meiqia_app.models.tag import Tag, TagAssignment, TagRule
from meiqia_app.models.workflow import (
    AppSetting,
    Backup,
    DownloadToken,
    ErasureRequest,
    ExportJob,
    Job,
    SavedView,
)

__all__ = [
    "ApiIdempotency",
    "ApiKey",
    "ExternalRef",
    "IngestedEvent",
    "WebhookDelivery",
    "WebhookEndpoint",
    "AppSetting",
    "AuditEntry",
    "Backup",
    "BehaviorEvent",
    "Conversation",
    "Customer",
    "CustomField",
    "CustomerSearch",
    "DownloadToken",
    "ErasureRequest",
    "ExportJob",
    "Job",
    "FieldChange",
    "OwnerChange",
    "LoginAddressThrottle",
    "LoginChallenge",
    "LoginThrottle",
    "Message",
    "Note",
    "ReportDaily",
    "ReportDirty",
    "ReportLedger",
    "Order",
    "Product",
    "RecoveryCode",
    "Role",
    "SavedView",
    "Tag",
    "Team",
    "TagAssignment",
    "TagRule",
    "User",
    "UserSession",
]
