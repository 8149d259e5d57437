"""Errors of the workbench, each with its HTTP status and stable code."""

from ordertally.core.errors import OrdertallyError


class CaseworkError(OrdertallyError):
    status = 409
    code = "casework.error"
    title = "Workbench error"


class BatchNotFound(CaseworkError):
    status = 404
    code = "casework.batch_not_found"
    title = "No such batch action"


class BatchNotConfirmable(CaseworkError):
    code = "casework.batch_not_confirmable"
    title = "Only a previewed batch can be confirmed"


class BatchNotCancellable(CaseworkError):
    code = "casework.batch_not_cancellable"
    title = "The batch has already finished"


class BadCursor(CaseworkError):
    status = 400
    code = "casework.bad_cursor"
    title = "The page cursor is not one this API gave out"
