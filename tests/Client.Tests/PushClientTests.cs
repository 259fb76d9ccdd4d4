namespace OrleansPush.Client.Tests;

public sealed class PushClientTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task ClientRidesOutAGatewayRestartAndGetsEveryMessageExactlyOnceInOrder()
    {
        await using var cluster = await ClientCluster.StartAsync();
        var topic = "steady:" + Guid.NewGuid().ToString("N");
        var received = new List<PushMessage>();
        var states = new List<PushConnectionState>();
        await using var client = new PushClient(new PushClientOptions
        {
            Url = cluster.EdgeWebSocketUri,
            ReconnectBaseDelay = TimeSpan.FromMilliseconds(100),
            ReconnectMaxDelay = TimeSpan.FromSeconds(1),
        });
        client.StateChanged += s => { lock (states) { states.Add(s); } };
        using var started = new CancellationTokenSource(Wait);
        await client.StartAsync(started.Token);
        await client.SubscribeAsync(topic, m => { lock (received) { received.Add(m); } }, started.Token);

        const int total = 150;
        var publisher = new PushPublisher(cluster.Publishing.Http);
        var publishing = Task.Run(async () =>
        {
            for (var i = 1; i <= total; i++)
            {
                await publisher.PublishAsync(topic, new { i });
                await Task.Delay(10);
            }
        });

        await Until(() => Count(received) >= 30, "30 messages before the restart");
        await cluster.StopEdgeAsync();
        await Task.Delay(500);
        await cluster.StartEdgeAsync();

        await publishing.WaitAsync(Wait);
        await Until(() => Count(received) >= total, "every message after the restart");
        await Task.Delay(300);

        PushMessage[] all;
        lock (received)
        {
            all = [.. received];
        }

        Assert.Equal(Enumerable.Range(1, total).Select(i => (long)i), all.Select(m => m.Seq));
        Assert.Equal(Enumerable.Range(1, total), all.Select(m => m.Data.GetProperty("i").GetInt32()));
        Assert.True(client.Reconnects >= 1, "the client reconnected");
        lock (states)
        {
            Assert.Contains(PushConnectionState.Reconnecting, states);
        }

        Assert.Equal(PushConnectionState.Connected, client.State);
    }

    [Fact]
    public async Task GapThatHistoryCannotFillIsReportedToTheApplication()
    {
        await using var cluster = await ClientCluster.StartAsync();
        var topic = "tiny:" + Guid.NewGuid().ToString("N");
        var received = new List<long>();
        var failures = new List<RecoveryFailure>();
        await using var client = new PushClient(new PushClientOptions
        {
            Url = cluster.EdgeWebSocketUri,
            ReconnectBaseDelay = TimeSpan.FromMilliseconds(100),
            ReconnectMaxDelay = TimeSpan.FromMilliseconds(500),
        });
        client.RecoveryFailed += f => { lock (failures) { failures.Add(f); } };
        using var started = new CancellationTokenSource(Wait);
        await client.StartAsync(started.Token);
        await client.SubscribeAsync(topic, m => { lock (received) { received.Add(m.Seq); } }, started.Token);

        var publisher = new PushPublisher(cluster.Publishing.Http);
        var first = await publisher.PublishAsync(topic, 1);
        await Until(() => Count(received) >= 1, "the first message");

        await cluster.StopEdgeAsync();
        for (var i = 2; i <= 10; i++)
        {
            await publisher.PublishAsync(topic, i);
        }

        await cluster.StartEdgeAsync();
        await Until(() => Count(received) >= 4, "what history still holds");
        await Until(() => Count(failures) >= 1, "the gap reported");

        lock (received)
        {
            Assert.Equal([1L, 8L, 9L, 10L], received);
        }

        lock (failures)
        {
            var failure = Assert.Single(failures);
            Assert.Equal(topic, failure.Topic);
            Assert.Equal(new PushPosition(first.Epoch, 1), failure.LastSeen);
            Assert.Equal(first.Epoch, failure.Now.Epoch);
        }
    }

    [Fact]
    public async Task ClientPublishesWhereTheNamespaceAllowsAndIsRefusedElsewhere()
    {
        await using var cluster = await ClientCluster.StartAsync();
        var topic = "chat:" + Guid.NewGuid().ToString("N");
        var got = new TaskCompletionSource<PushMessage>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var client = new PushClient(new PushClientOptions { Url = cluster.EdgeWebSocketUri, User = "alice" });
        using var cts = new CancellationTokenSource(Wait);
        await client.StartAsync(cts.Token);
        await client.SubscribeAsync(topic, m => got.TrySetResult(m), cts.Token);

        var position = await client.PublishJsonAsync(topic, "{\"hi\": 1}"u8.ToArray(), cts.Token);
        var message = await got.Task.WaitAsync(Wait);
        Assert.Equal(position.Seq, message.Seq);
        Assert.Equal("{\"hi\": 1}", System.Text.Encoding.UTF8.GetString(message.RawData.Span));

        var refused = await Assert.ThrowsAsync<PushException>(() => client.PublishAsync("news", new { x = 1 }, cts.Token));
        Assert.Equal("forbidden", refused.Code);
        var badTopic = await Assert.ThrowsAsync<PushException>(() => client.SubscribeAsync("bad topic", _ => { }, cts.Token));
        Assert.Equal("bad_topic", badTopic.Code);
    }

    internal static int Count<T>(List<T> list)
    {
        lock (list)
        {
            return list.Count;
        }
    }

    internal static long LastOf(List<long> list)
    {
        lock (list)
        {
            return list.Count == 0 ? 0 : list[^1];
        }
    }

    internal static async Task Until(Func<bool> condition, string what)
    {
        using var cts = new CancellationTokenSource(Wait);
        while (!condition())
        {
            Assert.False(cts.IsCancellationRequested, "timed out waiting for " + what);
            await Task.Delay(20);
        }
    }
}
