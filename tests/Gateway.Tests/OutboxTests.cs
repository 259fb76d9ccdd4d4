using Microsoft.Extensions.DependencyInjection;
using System.Diagnostics;
using System.Text.Json;
using Npgsql;
using Xunit.Abstractions;

namespace OrleansPush.Gateway.Tests;

/// <summary>The transactional outbox as a backend uses it: rows inserted into <c>{prefix}_outbox</c> in the backend's
/// own transactions reach the topics' subscribers once, in id order per topic; rolled-back rows never do.</summary>
public sealed class OutboxTests(ITestOutputHelper output)
{
    [Fact]
    public async Task CommittedRowsArriveInIdOrderRolledBackRowsNever()
    {
        var (settings, prefix) = Settings();
        await using var gateway = await TestGateway.StartEmbeddedAsync(settings);
        await using var db = NpgsqlDataSource.Create(Postgres());
        var (topic, subscriber) = await SubscribeWhenTableIsThereAsync(gateway, db, prefix);
        await using var _ = subscriber;

        // The first transaction takes the lower id and commits last: its row must still come first.
        await using var early = await db.OpenConnectionAsync();
        await using var earlyTx = await early.BeginTransactionAsync();
        await InsertAsync(early, earlyTx, prefix, topic, "{\"n\":1}");
        await using (var late = await db.OpenConnectionAsync())
        {
            await using var lateTx = await late.BeginTransactionAsync();
            await InsertAsync(late, lateTx, prefix, topic, "{\"n\":2}");
            await lateTx.CommitAsync();
            await using var rolledBackTx = await late.BeginTransactionAsync();
            await InsertAsync(late, rolledBackTx, prefix, topic, "{\"n\":\"rolled back\"}");
            await rolledBackTx.RollbackAsync();
        }

        // Time for a consumer that ignored the open transaction to publish n=2 first (the order below would show it).
        await Task.Delay(300);
        await earlyTx.CommitAsync();
        await using (var after = await db.OpenConnectionAsync())
        {
            await InsertAsync(after, null, prefix, topic, "{\"n\":3}");
        }

        var messages = await subscriber.MessagesAsync(3);
        Assert.Equal(["{\"n\":1}", "{\"n\":2}", "{\"n\":3}"], messages.Select(m => m.RawData));
        Assert.Equal([1L, 2L, 3L], messages.Select(m => m.Seq));
        Assert.True(await subscriber.IsQuietAsync(TimeSpan.FromMilliseconds(500)), "a rolled-back row was published");
        await WaitUntilEmptyAsync(db, prefix);
    }

    /// <summary>A row with <c>data_bytes</c> in place of <c>data</c> is published as binary; a row with both or neither
    /// is refused (moved to the refused table) and the rows after it still go out.</summary>
    [Fact]
    public async Task BinaryRowsArriveAsTheirBytesAndRowsWithBothOrNoPayloadAreRefused()
    {
        var (settings, prefix) = Settings();
        await using var gateway = await TestGateway.StartEmbeddedAsync(settings);
        await using var db = NpgsqlDataSource.Create(Postgres());
        var (topic, subscriber) = await SubscribeWhenTableIsThereAsync(gateway, db, prefix);
        await using var _ = subscriber;
        byte[] garbled = [0x00, 0xff, 0xc3, 0x28, 0x00];

        await using (var connection = await db.OpenConnectionAsync())
        {
            foreach (var (json, bytes) in new (string?, byte[]?)[] { (null, garbled), ("{\"both\":1}", garbled), (null, null), ("{\"n\":2}", null) })
            {
                await using var insert = new NpgsqlCommand($"INSERT INTO {prefix}_outbox (topic, data, data_bytes) VALUES ($1, $2::json, $3)", connection);
                insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = topic });
                insert.Parameters.Add(new NpgsqlParameter { Value = (object?)json ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
                insert.Parameters.Add(new NpgsqlParameter { Value = (object?)bytes ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Bytea });
                await insert.ExecuteNonQueryAsync();
            }
        }

        var messages = await subscriber.MessagesAsync(2);
        Assert.Equal(Convert.ToBase64String(garbled), messages[0].Json.GetProperty("data_b64").GetString());
        Assert.Equal("{\"n\":2}", messages[1].RawData);
        Assert.True(await subscriber.IsQuietAsync(TimeSpan.FromMilliseconds(500)), "a refused row was published");
        await WaitUntilEmptyAsync(db, prefix);
        await using var refused = db.CreateCommand($"SELECT count(*) FROM {prefix}_outbox_refused WHERE code = 'bad_request'");
        Assert.Equal(2L, (long)(await refused.ExecuteScalarAsync())!);
    }

    /// <summary>Row-to-subscriber latency (commit to the subscriber's receipt), one row per transaction; printed for the
    /// README and the note, not asserted.</summary>
    [Fact]
    public async Task RowsReachTheSubscriberWithoutAPollingPeriod()
    {
        var (settings, prefix) = Settings();
        await using var gateway = await TestGateway.StartEmbeddedAsync(settings);
        await using var db = NpgsqlDataSource.Create(Postgres());
        var (topic, subscriber) = await SubscribeWhenTableIsThereAsync(gateway, db, prefix);
        await using var _ = subscriber;
        await using var connection = await db.OpenConnectionAsync();
        var latencies = new List<double>();
        for (var i = 1; i <= 200; i++)
        {
            await InsertAsync(connection, null, prefix, topic, $"{{\"i\":{i}}}");
            var committed = Stopwatch.GetTimestamp();
            var message = Assert.Single(await subscriber.MessagesAsync(1));
            latencies.Add(Stopwatch.GetElapsedTime(committed).TotalMilliseconds);
            Assert.Equal(($"{{\"i\":{i}}}", (long)i), (message.RawData, message.Seq));
        }

        latencies.Sort();
        output.WriteLine($"outbox row to subscriber, 200 rows: p50 {latencies[99]:F2} ms, p99 {latencies[197]:F2} ms, max {latencies[^1]:F2} ms");
    }

    /// <summary>Issue 14's outbox test: 1,000 rows over 10 topics, inserted by concurrent transactions (some rolled back)
    /// while the silo that consumes the outbox is killed. Every committed row is delivered once, in id order per topic;
    /// rolled-back rows never.</summary>
    [Fact]
    public async Task EveryCommittedRowIsDeliveredOnceInOrderAcrossTheConsumingSilosDeath()
    {
        const int Rows = 1000;
        const int TopicCount = 10;
        var id = "ob" + Guid.NewGuid().ToString("N")[..8];
        var (storage, prefix) = Settings();
        var settings = TestGateway.Merge(TestGateway.Merge(storage, SiloKillTests.FastFailoverCluster(id)), new Dictionary<string, string?>
        {
            ["OrleansPush:Outbox:PublishAttemptTimeout"] = "00:00:03",
            ["OrleansPush:Outbox:MaxRetryDelay"] = "00:00:01",
            // Each topic gets about 100 rows; its history must hold them all, or a subscriber whose stream hop died with
            // the silo is told reset (insufficient_state) instead of repaired, as the contract says (seen in ./test.sh).
            ["OrleansPush:Topics:Default:HistorySize"] = "2000",
        });
        await using var first = SiloProcess.Start(null, settings);
        await using var second = SiloProcess.Start(null, settings);
        settings.Remove("OrleansPush:Outbox:Enabled");
        await using var gateway = await SiloKillTests.StartGatewayWhenClusterIsUpAsync(TestGateway.Merge(settings, new Dictionary<string, string?>
        {
            ["OrleansPush:Cluster:Mode"] = "Cluster",
        }));
        await SiloKillTests.WaitForActiveSilosAsync(gateway, first, second);

        await using var db = NpgsqlDataSource.Create(Postgres());
        await WaitForTableAsync(db, prefix);
        var topics = Enumerable.Range(0, TopicCount).Select(i => GatewayFixture.NewTopic($"outbox-{i}")).ToArray();
        await using var subscriber = await WsClient.ConnectAsync(gateway.WebSocketUri());
        foreach (var topic in topics)
        {
            Assert.Equal("ok", (await subscriber.SubscribeAsync(topic)).Op);
        }

        // Four writers; each transaction inserts 1-5 rows (to random topics) and one in ten rolls back. The row's data
        // names it, and its id is read back, so committed rows are known with their ids.
        var committed = new List<(long Id, string Topic, int Row)>();
        var rolledBack = new HashSet<int>();
        var next = 0;
        var killed = 0;
        var consumers = new[] { first, second };
        SiloProcess? victim = null;
        async Task WriteAsync(int writer)
        {
            var random = new Random(writer);
            await using var connection = await db.OpenConnectionAsync();
            while (true)
            {
                var rows = random.Next(1, 6);
                var mine = new List<(long, string, int)>();
                await using var transaction = await connection.BeginTransactionAsync();
                for (var r = 0; r < rows; r++)
                {
                    var row = Interlocked.Increment(ref next);
                    if (row > Rows)
                    {
                        break;
                    }

                    var topic = topics[random.Next(TopicCount)];
                    mine.Add((await InsertAsync(connection, transaction, prefix, topic, $"{{\"row\":{row}}}"), topic, row));
                }

                if (mine.Count == 0)
                {
                    await transaction.RollbackAsync();
                    return;
                }

                if (random.Next(10) == 0)
                {
                    await transaction.RollbackAsync();
                    lock (rolledBack)
                    {
                        rolledBack.UnionWith(mine.Select(m => m.Item3));
                    }
                }
                else
                {
                    await transaction.CommitAsync();
                    lock (committed)
                    {
                        committed.AddRange(mine);
                        if (committed.Count >= Rows * 2 / 5 && Interlocked.Exchange(ref killed, 1) == 0)
                        {
                            victim = KillConsumer(consumers);
                        }
                    }
                }
            }
        }

        await Task.WhenAll(Enumerable.Range(1, 4).Select(WriteAsync));
        Assert.NotNull(victim);
        output.WriteLine($"{committed.Count} rows committed, {rolledBack.Count} rolled back; killed silo process {victim!.Pid}");

        var expected = topics.ToDictionary(t => t, t => committed.Where(c => c.Topic == t).OrderBy(c => c.Id).Select(c => c.Row).ToList());
        var received = topics.ToDictionary(t => t, _ => new List<int>());
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
        var others = new List<string>();
        while (received.Values.Sum(r => r.Count) < committed.Count && DateTime.UtcNow < deadline)
        {
            Frame frame;
            try
            {
                frame = await subscriber.NextAsync(TimeSpan.FromSeconds(2));
            }
            catch (OperationCanceledException)
            {
                continue;
            }
            catch (System.Threading.Channels.ChannelClosedException)
            {
                others.Add("(the connection ended)");
                break;
            }

            if (frame.Op == "msg")
            {
                received[frame.Topic!].Add(JsonDocument.Parse(frame.RawData).RootElement.GetProperty("row").GetInt32());
            }
            else
            {
                others.Add(frame.Raw);
            }
        }

        var survivor = victim == first ? second : first;
        foreach (var topic in topics)
        {
            if (!expected[topic].SequenceEqual(received[topic]))
            {
                // What the gateway and the topic's grain knew, for the failure message.
                var position = await gateway.Services.GetRequiredService<IClusterClient>().GetGrain<ITopicGrain>(topic).GetPositionAsync();
                Assert.Fail($"{topic}: expected rows {string.Join(",", expected[topic])}\nbut received {string.Join(",", received[topic])}"
                    + $"\ngrain position {position.Epoch}:{position.Seq}; frames other than msg: {string.Join(" ", others)}"
                    + $"\n--- surviving silo ---\n{survivor.Tail()}");
            }
        }

        Assert.True(await subscriber.IsQuietAsync(TimeSpan.FromSeconds(1)), "more messages than committed rows arrived");
        await WaitUntilEmptyAsync(db, prefix);
    }

    /// <summary>Kills the silo process that holds the outbox's consumer lock (its connection's application name carries
    /// its process id).</summary>
    private static SiloProcess KillConsumer(SiloProcess[] silos)
    {
        using var db = NpgsqlDataSource.Create(Postgres());
        using var command = db.CreateCommand(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            + "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'orleanspush-outbox:%'");
        var names = new List<string>();
        using (var reader = command.ExecuteReader())
        {
            while (reader.Read())
            {
                names.Add(reader.GetString(0));
            }
        }

        var pids = names.Select(n => int.Parse(n["orleanspush-outbox:".Length..], System.Globalization.CultureInfo.InvariantCulture)).ToHashSet();
        var leader = Assert.Single(silos, s => pids.Contains(s.Pid));
        leader.Kill();
        return leader;
    }

    private static (Dictionary<string, string?> Settings, string Prefix) Settings()
    {
        var prefix = "ob" + Guid.NewGuid().ToString("N")[..8];
        return (new Dictionary<string, string?>
        {
            ["OrleansPush:Storage:Provider"] = "Postgres",
            ["OrleansPush:Storage:Postgres"] = Postgres(),
            ["OrleansPush:Storage:Prefix"] = prefix,
            ["OrleansPush:Outbox:Enabled"] = "true",
        }, prefix);
    }

    private static async Task<(string Topic, WsClient Subscriber)> SubscribeWhenTableIsThereAsync(TestGateway gateway, NpgsqlDataSource db, string prefix)
    {
        await WaitForTableAsync(db, prefix);
        var topic = GatewayFixture.NewTopic("outbox");
        var subscriber = await WsClient.ConnectAsync(gateway.WebSocketUri());
        Assert.Equal("ok", (await subscriber.SubscribeAsync(topic)).Op);
        return (topic, subscriber);
    }

    private static string Postgres() => Environment.GetEnvironmentVariable("ORLEANSPUSH_TEST_POSTGRES")
        ?? throw new InvalidOperationException("ORLEANSPUSH_TEST_POSTGRES is not set: run the tests with ./test.sh.");

    private static async Task<long> InsertAsync(NpgsqlConnection connection, NpgsqlTransaction? transaction, string prefix, string topic, string data)
    {
        await using var insert = new NpgsqlCommand($"INSERT INTO {prefix}_outbox (topic, data) VALUES ($1, $2::json) RETURNING id", connection, transaction);
        insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = topic });
        insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = data });
        return (long)(await insert.ExecuteScalarAsync())!;
    }

    /// <summary>The consumer creates the table when its silo starts; a backend's first insert waits for it.</summary>
    private static async Task WaitForTableAsync(NpgsqlDataSource db, string prefix)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            await using var check = db.CreateCommand($"SELECT to_regclass('{prefix}_outbox') IS NOT NULL");
            if ((bool)(await check.ExecuteScalarAsync())!)
            {
                return;
            }

            Assert.True(DateTime.UtcNow < deadline, "the outbox table was not created within 30 s");
            await Task.Delay(100);
        }
    }

    /// <summary>Published rows are deleted: the table ends empty.</summary>
    private static async Task WaitUntilEmptyAsync(NpgsqlDataSource db, string prefix)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            await using var count = db.CreateCommand($"SELECT count(*) FROM {prefix}_outbox");
            var left = (long)(await count.ExecuteScalarAsync())!;
            if (left == 0)
            {
                return;
            }

            Assert.True(DateTime.UtcNow < deadline, $"{left} published rows were not deleted within 30 s");
            await Task.Delay(100);
        }
    }
}
