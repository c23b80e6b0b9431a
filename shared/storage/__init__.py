"""The storage edge: Azure Blob and Queue Storage (or Azurite), and a local folder that stands in.

    accounts   service clients from a connection setting, resolved as the Functions host does
    blobs      ``Store``: read, write, list, copy and delete blobs (``BlobStore``, ``FolderStore``)
    queues     messages encoded as the host expects them, sent as an output binding would
    poison     the messages and blobs the host gave up on, counted and moved back
    errors     which storage failures are worth a retry

Depends on ``shared.core`` only; knows nothing of PostgreSQL or of the Function App.
"""
