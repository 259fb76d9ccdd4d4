namespace OrleansPush.Gateway.Tests;

/// <summary>Many publishers, many subscribers that drop and come back at random: what each subscriber sees per
/// topic rises strictly, and with resume (<c>since</c>) nothing is missing.</summary>
[Collection(GatewayCollection.Name)]
public sealed class ResumePropertyTests(GatewayFixture fixture)
{
    private const int Topics = 4;
    private const int Publishers = 3;
    private const int MessagesPerPublisher = 150;
    private const int Subscribers = 8;

    [Fact]
    public async Task RandomDisconnectsNeverReorderDuplicateOrLoseMessages()
    {
        var gateway = fixture.Gateway;
        var topics = Enumerable.Range(0, Topics).Select(i => $"prop:{i}-{Guid.NewGuid():N}").ToArray();
        var sessions = new List<Session>();
        for (var i = 0; i < Subscribers; i++)
        {
            var session = new Session(topics, new Random(1000 + i));
            await session.ConnectAsync(gateway);
            sessions.Add(session);
        }

        var publishing = Task.WhenAll(Enumerable.Range(0, Publishers).Select(async p =>
        {
            var random = new Random(p);
            for (var n = 0; n < MessagesPerPublisher; n++)
            {
                await gateway.PublishAsync(topics[random.Next(Topics)], $"{{\"p\":{p},\"n\":{n}}}");
            }
        }));

        // While publishing: each subscriber reads a while, drops its connection, and comes back with since.
        var churn = Task.WhenAll(sessions.Select(async s =>
        {
            while (!publishing.IsCompleted)
            {
                await s.ReadForAsync(TimeSpan.FromMilliseconds(s.Random.Next(50, 400)));
                await s.ReconnectAsync(gateway);
            }
        }));
        await publishing;
        await churn;

        var heads = new Dictionary<string, long>();
        foreach (var topic in topics)
        {
            heads[topic] = (await System.Net.Http.Json.HttpClientJsonExtensions.GetFromJsonAsync<PublishAnswer>(gateway.Http, "/api/topics/" + topic))!.Seq;
        }

        Assert.Equal(Publishers * MessagesPerPublisher, heads.Values.Sum());
        foreach (var s in sessions)
        {
            await s.ReadUntilAsync(heads, TimeSpan.FromSeconds(30));
            foreach (var topic in topics)
            {
                // Strictly rising was checked on every message; complete means exactly 1..head.
                Assert.Equal(Enumerable.Range(1, (int)heads[topic]).Select(i => (long)i), s.Seen[topic]);
            }

            Assert.True(s.Reconnects > 0);
            Assert.All(s.RecoveredAnswers, Assert.True);
            await s.DisposeAsync();
        }
    }

    private sealed class Session(string[] topics, Random random) : IAsyncDisposable
    {
        private readonly Dictionary<string, string> _epochs = [];
        private WsClient? _client;

        public Random Random { get; } = random;

        public Dictionary<string, List<long>> Seen { get; } = topics.ToDictionary(t => t, _ => new List<long>());

        public List<bool> RecoveredAnswers { get; } = [];

        public int Reconnects { get; private set; }

        public async Task ConnectAsync(TestGateway gateway)
        {
            _client = await WsClient.ConnectAsync(gateway.WebSocketUri());
            foreach (var topic in topics)
            {
                var since = _epochs.TryGetValue(topic, out var epoch) ? new { epoch, seq = Seen[topic].LastOrDefault() } : null;
                var ok = await _client.SubscribeAsync(topic, since);
                Assert.Equal("ok", ok.Op);
                _epochs[topic] = ok.Epoch!;
                if (since is not null)
                {
                    RecoveredAnswers.Add(ok.Recovered == true);
                }
            }
        }

        public async Task ReconnectAsync(TestGateway gateway)
        {
            // Take what already arrived, then drop the connection without a word.
            await ReadForAsync(TimeSpan.Zero);
            await _client!.DisposeAsync();
            Reconnects++;
            await ConnectAsync(gateway);
        }

        public async Task ReadForAsync(TimeSpan time)
        {
            var until = DateTime.UtcNow + time;
            do
            {
                try
                {
                    Record((await _client!.MessagesAsync(1, TimeSpan.FromMilliseconds(20)))[0]);
                }
                catch (OperationCanceledException)
                {
                }
            }
            while (DateTime.UtcNow < until);
        }

        public async Task ReadUntilAsync(Dictionary<string, long> heads, TimeSpan wait)
        {
            var deadline = DateTime.UtcNow + wait;
            while (heads.Any(h => Seen[h.Key].LastOrDefault() < h.Value) && DateTime.UtcNow < deadline)
            {
                await ReadForAsync(TimeSpan.FromMilliseconds(100));
            }
        }

        private void Record(Frame message)
        {
            var seen = Seen[message.Topic!];
            Assert.True(seen.Count == 0 || message.Seq > seen[^1], $"{message.Topic}: seq {message.Seq} after {seen.LastOrDefault()}");
            seen.Add(message.Seq);
        }

        public async ValueTask DisposeAsync()
        {
            if (_client is not null)
            {
                await _client.DisposeAsync();
            }
        }
    }
}
