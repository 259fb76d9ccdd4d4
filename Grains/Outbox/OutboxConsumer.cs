using System.Collections.Concurrent;
using System.Text;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;
using NpgsqlTypes;
using OrleansPush.Grains.History;

namespace OrleansPush.Grains.Outbox;

/// <summary>
/// Publishes the rows of <c>{prefix}_outbox</c>, a table backends insert into in their own transactions, and deletes
/// them once published.
/// <list type="bullet">
/// <item>One silo consumes at a time: the one holding a session advisory lock. The others wait for it inside PostgreSQL
/// (a blocked <c>pg_advisory_lock</c>, no polling), so when the consuming silo dies and its connection closes, the next
/// one takes over at once.</item>
/// <item>Each row is published with its <c>key</c>, or <c>outbox:{id}</c>, as idempotency key, and deleted after: a row
/// published by a silo that died before deleting it is published again by the next one and deduplicated by its topic.
/// </item>
/// <item>Per topic in id order. Ids are taken at insert and transactions commit out of order, so a round reads only up to
/// a watermark below which no id can still appear: the sequence's last value, once every transaction that was
/// inserting into the table when it was read has ended (INSERT locks the table in ROW EXCLUSIVE mode before it takes
/// its id, and holds the lock to its transaction's end; <c>pg_locks</c> shows who holds it).</item>
/// <item>An insert trigger notifies the consumer (<c>LISTEN</c>/<c>NOTIFY</c>, delivered at commit): a row is published
/// within milliseconds of its commit, and an idle outbox costs nothing.</item>
/// </list>
/// A row its topic refuses for good (a bad topic name, a payload over the limit) is moved to <c>{prefix}_outbox_refused</c>
/// with the reason, so one bad row does not hold back the rest.
/// </summary>
public sealed class OutboxConsumer : BackgroundService
{
    private static readonly TimeSpan FirstRetryDelay = TimeSpan.FromMilliseconds(50);
    private static readonly TimeSpan LongestLockCheckDelay = TimeSpan.FromMilliseconds(100);

    private readonly NpgsqlDataSource _dataSource;
    private readonly NpgsqlDataSource _leaderSource;
    private readonly IGrainFactory _grains;
    private readonly OutboxOptions _options;
    private readonly ILogger<OutboxConsumer> _logger;
    private readonly string _prefix;
    private readonly string _table;
    private readonly string _refused;
    private readonly string _channel;

    /// <summary>The wait before trying again after a failure; back to the first once this silo leads again.</summary>
    private TimeSpan _retryDelay = FirstRetryDelay;

    /// <summary>The virtual transaction ids holding the table's insert lock (a filter is appended).</summary>
    private readonly string _insertLocks;

    public OutboxConsumer(string connectionString, string prefix, OutboxOptions options, IGrainFactory grains, ILogger<OutboxConsumer> logger)
    {
        _dataSource = Build(connectionString, pooling: true);
        // The leading connection is never pooled: its session lock must go when it is closed, not stay with a pooled
        // connection until someone reuses it.
        _leaderSource = Build(connectionString, pooling: false);
        _grains = grains;
        _options = options;
        _logger = logger;
        _prefix = prefix;
        _table = PostgresHistoryStore.Identifier(prefix + "_outbox");
        _refused = PostgresHistoryStore.Identifier(prefix + "_outbox_refused");
        _channel = _table.ToLowerInvariant();
        _insertLocks = $"SELECT coalesce(array_agg(virtualtransaction), ARRAY[]::text[]) FROM pg_locks WHERE locktype = 'relation'"
            + $" AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND relation = '{_table}'::regclass"
            + " AND mode = 'RowExclusiveLock' AND granted";
    }

    private static NpgsqlDataSource Build(string connectionString, bool pooling)
    {
        var builder = new NpgsqlDataSourceBuilder(connectionString);
        // The consuming silo's lock lives as long as its connection: keepalives notice a database that went away while
        // the connection sat waiting for a notification. The name tells operators which process consumes.
        builder.ConnectionStringBuilder.KeepAlive = 10;
        builder.ConnectionStringBuilder.ApplicationName = ApplicationName;
        builder.ConnectionStringBuilder.Pooling = pooling;
        return builder.Build();
    }

    /// <summary>The <c>application_name</c> of this process's outbox connections (seen in <c>pg_stat_activity</c>).</summary>
    public static string ApplicationName { get; } = $"orleanspush-outbox:{Environment.ProcessId}";

    /// <summary>The tables, the notify trigger, in the order they are created (idempotent).</summary>
    public static string SchemaFor(string prefix)
    {
        var table = PostgresHistoryStore.Identifier(prefix + "_outbox");
        var refused = PostgresHistoryStore.Identifier(prefix + "_outbox_refused");
        var notify = PostgresHistoryStore.Identifier(prefix + "_outbox_notify");
        return $"""
            CREATE TABLE IF NOT EXISTS {table} (
                id bigserial PRIMARY KEY,
                topic text NOT NULL,
                data json NOT NULL,
                key text,
                created_at timestamptz NOT NULL DEFAULT now());
            CREATE TABLE IF NOT EXISTS {refused} (
                id bigint PRIMARY KEY,
                topic text NOT NULL,
                data json NOT NULL,
                key text,
                created_at timestamptz NOT NULL,
                refused_at timestamptz NOT NULL DEFAULT now(),
                code text NOT NULL,
                reason text NOT NULL);
            ALTER TABLE {table} ADD COLUMN IF NOT EXISTS data_bytes bytea;
            ALTER TABLE {table} ALTER COLUMN data DROP NOT NULL;
            ALTER TABLE {refused} ADD COLUMN IF NOT EXISTS data_bytes bytea;
            ALTER TABLE {refused} ALTER COLUMN data DROP NOT NULL;
            CREATE OR REPLACE FUNCTION {notify}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('{table.ToLowerInvariant()}', '');
                RETURN NULL;
            END $$;
            CREATE OR REPLACE TRIGGER {notify} AFTER INSERT ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {notify}();
            """;
    }

    public override void Dispose()
    {
        _dataSource.Dispose();
        _leaderSource.Dispose();
        base.Dispose();
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await ConsumeWhileLeadingAsync(stoppingToken);
            }
            catch (Exception) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                OutboxLog.Failed(_logger, _retryDelay, ex);
                try
                {
                    await Task.Delay(_retryDelay, stoppingToken);
                }
                catch (OperationCanceledException)
                {
                    return;
                }

                _retryDelay = Min(_retryDelay * 2, _options.MaxRetryDelay);
            }
        }
    }

    /// <summary>Creates the schema, waits to be the consuming silo, then consumes until cancelled or the connection
    /// fails (the lock goes with the connection, so a failure hands the outbox to another silo).</summary>
    private async Task ConsumeWhileLeadingAsync(CancellationToken cancellationToken)
    {
        await using var leader = await _leaderSource.OpenConnectionAsync(cancellationToken);
        await using (var schema = new NpgsqlCommand(
            $"SELECT pg_advisory_lock(hashtext('{_channel}-schema')); {SchemaFor(_prefix)} SELECT pg_advisory_unlock(hashtext('{_channel}-schema'));", leader))
        {
            await schema.ExecuteNonQueryAsync(cancellationToken);
        }

        await using (var take = new NpgsqlCommand($"SELECT pg_advisory_lock(hashtext('{_channel}'))", leader) { CommandTimeout = 0 })
        {
            await take.ExecuteNonQueryAsync(cancellationToken);
        }

        await using (var listen = new NpgsqlCommand($"LISTEN {_channel}", leader))
        {
            await listen.ExecuteNonQueryAsync(cancellationToken);
        }

        OutboxLog.Leading(_logger, _table, Environment.ProcessId);
        _retryDelay = FirstRetryDelay;
        while (true)
        {
            // A notification of a commit during the round is kept by the connection, so the wait below returns at once
            // for it: no row committed after LISTEN can be missed.
            while (await ConsumeRoundAsync(cancellationToken))
            {
            }

            await leader.WaitAsync(cancellationToken);
        }
    }

    /// <summary>Publishes and deletes the rows up to the watermark (at most one batch); true when there was any.</summary>
    private async Task<bool> ConsumeRoundAsync(CancellationToken cancellationToken)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        var watermark = await WatermarkAsync(connection, cancellationToken);
        if (watermark == 0)
        {
            return false;
        }

        var rows = new List<OutboxRow>();
        await using (var read = new NpgsqlCommand($"SELECT id, topic, data::text, key, data_bytes FROM {_table} WHERE id <= $1 ORDER BY id LIMIT $2", connection))
        {
            read.Parameters.Add(new NpgsqlParameter<long> { TypedValue = watermark });
            read.Parameters.Add(new NpgsqlParameter<int> { TypedValue = _options.BatchSize });
            await using var reader = await read.ExecuteReaderAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                rows.Add(new OutboxRow(reader.GetInt64(0), reader.GetString(1), reader.IsDBNull(2) ? null : reader.GetString(2),
                    reader.IsDBNull(3) ? null : reader.GetString(3), reader.IsDBNull(4) ? null : (byte[])reader[4]));
            }
        }

        if (rows.Count == 0)
        {
            return false;
        }

        var refused = new ConcurrentQueue<(OutboxRow Row, PushRejectedException Reason)>();
        await Task.WhenAll(rows.GroupBy(r => r.Topic).Select(topic => PublishInOrderAsync(topic, refused, cancellationToken)));
        await RemoveAsync(connection, rows, refused, cancellationToken);
        return true;
    }

    /// <summary>The highest id below which every row is committed or will never be: the sequence's last value, once
    /// the transactions that held the table's insert lock when it was read have ended (0 when no id was ever taken).
    /// The lock is taken before the id, so a transaction that may still commit an id at or below the value is among
    /// them.</summary>
    private async Task<long> WatermarkAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        long last;
        await using (var sequence = new NpgsqlCommand(
            $"SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('{_table}', 'id')::regclass), 0)", connection))
        {
            last = (long)(await sequence.ExecuteScalarAsync(cancellationToken))!;
        }

        if (last == 0)
        {
            return 0;
        }

        string[] inserting;
        await using (var holders = new NpgsqlCommand(_insertLocks + " AND pid <> pg_backend_pid()", connection))
        {
            inserting = (string[])(await holders.ExecuteScalarAsync(cancellationToken))!;
        }

        var delay = TimeSpan.FromMilliseconds(1);
        while (inserting.Length > 0)
        {
            await Task.Delay(delay, cancellationToken);
            delay = Min(delay * 2, LongestLockCheckDelay);
            await using var still = new NpgsqlCommand(_insertLocks + " AND virtualtransaction = ANY($1)", connection);
            still.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = inserting, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
            inserting = (string[])(await still.ExecuteScalarAsync(cancellationToken))!;
        }

        return last;
    }

    /// <summary>Publishes one topic's rows one after another, each retried (same idempotency key) until its topic
    /// answers; a row refused for good is set aside.</summary>
    private async Task PublishInOrderAsync(IEnumerable<OutboxRow> rows, ConcurrentQueue<(OutboxRow, PushRejectedException)> refused,
        CancellationToken cancellationToken)
    {
        foreach (var row in rows)
        {
            var delay = FirstRetryDelay;
            while (true)
            {
                try
                {
                    await PublishAsync(row).WaitAsync(_options.PublishAttemptTimeout, cancellationToken);
                    break;
                }
                catch (PushRejectedException rejected) when (rejected.Code != WireCodes.Unavailable)
                {
                    refused.Enqueue((row, rejected));
                    break;
                }
                catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
                {
                    OutboxLog.PublishRetry(_logger, row.Id, row.Topic, delay, ex);
                    await Task.Delay(delay, cancellationToken);
                    delay = Min(delay * 2, _options.MaxRetryDelay);
                }
            }
        }
    }

    private Task<TopicPosition> PublishAsync(OutboxRow row)
    {
        var (data, format) = (row.Data, row.Bytes) switch
        {
            ({ } json, null) => (Encoding.UTF8.GetBytes(json), PayloadFormat.Json),
            (null, { } bytes) => (bytes, PayloadFormat.Binary),
            _ => throw new PushRejectedException(WireCodes.BadRequest, "A row has either data (JSON) or data_bytes (binary), not both or neither."),
        };
        var key = row.Key ?? "outbox:" + row.Id.ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (TopicName.PersonalOwner(row.Topic) is { } user)
        {
            return TopicName.IsValidUserId(user)
                ? _grains.GetGrain<IUserGrain>(user).PushAsync(data, format, key)
                : throw new PushRejectedException(WireCodes.BadTopic, "The user id of a user:{id} topic is not valid.");
        }

        return TopicName.IsValid(row.Topic)
            ? _grains.GetGrain<ITopicGrain>(row.Topic).PublishAsync(data, format, key)
            : throw new PushRejectedException(WireCodes.BadTopic, "A topic is 1-200 characters of A-Z a-z 0-9 _ - . : / @.");
    }

    /// <summary>Deletes the published rows and moves the refused ones to <c>{prefix}_outbox_refused</c>, in one
    /// transaction.</summary>
    private async Task RemoveAsync(NpgsqlConnection connection, List<OutboxRow> rows,
        ConcurrentQueue<(OutboxRow Row, PushRejectedException Reason)> refused, CancellationToken cancellationToken)
    {
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        foreach (var (row, reason) in refused)
        {
            OutboxLog.Refused(_logger, row.Id, row.Topic, reason.Code, reason.Message, _refused);
            await using var move = new NpgsqlCommand(
                $"INSERT INTO {_refused} (id, topic, data, data_bytes, key, created_at, code, reason) SELECT id, topic, data, data_bytes, key, created_at, $2, $3 FROM {_table} WHERE id = $1 ON CONFLICT (id) DO NOTHING",
                connection, transaction);
            move.Parameters.Add(new NpgsqlParameter<long> { TypedValue = row.Id });
            move.Parameters.Add(new NpgsqlParameter<string> { TypedValue = reason.Code });
            move.Parameters.Add(new NpgsqlParameter<string> { TypedValue = reason.Message });
            await move.ExecuteNonQueryAsync(cancellationToken);
        }

        await using (var delete = new NpgsqlCommand($"DELETE FROM {_table} WHERE id = ANY($1)", connection, transaction))
        {
            delete.Parameters.Add(new NpgsqlParameter<long[]> { TypedValue = [.. rows.Select(r => r.Id)] });
            await delete.ExecuteNonQueryAsync(cancellationToken);
        }

        await transaction.CommitAsync(cancellationToken);
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    /// <summary>A row: its payload is <see cref="Data"/> (the <c>data</c> json column) or <see cref="Bytes"/> (the
    /// <c>data_bytes</c> bytea column, published as binary).</summary>
    private sealed record OutboxRow(long Id, string Topic, string? Data, string? Key, byte[]? Bytes);
}
