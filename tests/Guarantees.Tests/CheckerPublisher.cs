using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using OrleansPush.Gateway.Tests;

namespace OrleansPush.Guarantees.Tests;

/// <summary>
/// A backend publishing through the HTTP API of a random gateway, by its own seeded Random. Every publish has a
/// payload of its own. Half carry an <c>Idempotency-Key</c> and are retried with the same key and payload until
/// acknowledged (a few times at most); the others are tried once. Every answer is recorded.
/// </summary>
public sealed class CheckerPublisher(string name, IReadOnlyList<string> topics, Random random, Func<Random, (string Name, TestGateway Gateway)?> pickGateway, Journal journal)
{
    private const int MaxAttempts = 4;
    private readonly List<PublishRecord> _records = [];

    public IReadOnlyList<PublishRecord> Records
    {
        get
        {
            lock (_records)
            {
                return _records.ToList();
            }
        }
    }

    /// <summary>Publishes until <paramref name="stop"/>; a publish under way when it comes is finished first.</summary>
    public async Task RunAsync(CancellationToken stop)
    {
        for (var n = 1; !stop.IsCancellationRequested; n++)
        {
            var topic = topics[random.Next(topics.Count)];
            var keyed = random.NextDouble() < 0.5;
            var record = new PublishRecord(topic, $"{{\"p\":\"{name}-{n}\"}}", keyed ? $"{name}-{n}" : null);
            lock (_records)
            {
                _records.Add(record);
            }

            for (var attempt = 1; attempt <= (keyed ? MaxAttempts : 1); attempt++)
            {
                var outcome = await PublishOnceAsync(record);
                if (outcome == PublishOutcome.Acknowledged || (outcome == PublishOutcome.NotPublished && random.NextDouble() < 0.5))
                {
                    break;
                }
            }

            try
            {
                await Task.Delay(random.Next(5, 40), stop);
            }
            catch (OperationCanceledException)
            {
            }
        }
    }

    private async Task<PublishOutcome> PublishOnceAsync(PublishRecord record)
    {
        if (pickGateway(random) is not var (gatewayName, gateway))
        {
            await Task.Delay(100);
            return PublishOutcome.NoAnswer;
        }

        PublishOutcome outcome;
        Position? position = null;
        string detail;
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/api/topics/" + record.Topic)
            {
                Content = new StringContent(record.Payload, Encoding.UTF8, "application/json"),
            };
            if (record.Key is { } key)
            {
                request.Headers.Add("Idempotency-Key", key);
            }

            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            using var response = await gateway.Http.SendAsync(request, timeout.Token);
            if (response.IsSuccessStatusCode)
            {
                var answer = (await response.Content.ReadFromJsonAsync<PublishAnswer>(timeout.Token))!;
                position = new Position(answer.Epoch, answer.Seq);
                (outcome, detail) = (PublishOutcome.Acknowledged, position.ToString()!);
            }
            else
            {
                var body = await response.Content.ReadAsStringAsync(timeout.Token);
                var message = response.StatusCode == HttpStatusCode.ServiceUnavailable ? Message(body) : string.Empty;
                outcome = message.Contains("may have been published", StringComparison.Ordinal) ? PublishOutcome.MayHaveBeenPublished
                    : message.Contains("not published", StringComparison.Ordinal) ? PublishOutcome.NotPublished
                    : PublishOutcome.NoAnswer;
                detail = $"{(int)response.StatusCode} {body}";
            }
        }
        catch (Exception ex) when (ex is HttpRequestException or OperationCanceledException or ObjectDisposedException or IOException or JsonException)
        {
            (outcome, detail) = (PublishOutcome.NoAnswer, ex.GetType().Name);
        }

        record.Add(outcome, position, detail, journal.ElapsedMs);
        journal.Add($"publish {record.Payload} {record.Topic} key={record.Key ?? "-"} via {gatewayName}: {outcome} {detail}");
        return outcome;
    }

    private static string Message(string body)
    {
        try
        {
            using var json = JsonDocument.Parse(body);
            return json.RootElement.TryGetProperty("message", out var m) ? m.GetString() ?? string.Empty : string.Empty;
        }
        catch (JsonException)
        {
            return string.Empty;
        }
    }
}
