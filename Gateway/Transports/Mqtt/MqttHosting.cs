using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Options;
using MQTTnet.AspNetCore;
using MQTTnet.Diagnostics.Logger;
using MQTTnet.Server;
using MQTTnet.Server.Internal.Adapter;
using MQTTnet.Adapter;
using OrleansPush.Gateway.Connections;

namespace OrleansPush.Gateway.Transports.Mqtt;

/// <summary>Wiring of MQTT: the MQTTnet broker (TCP listener of its own, WebSocket through ASP.NET Core at
/// <see cref="MqttOptions.WebSocketPath"/>) with <see cref="MqttBridge"/> deciding everything.</summary>
public static class MqttHosting
{
    public static IServiceCollection AddMqttTransport(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<MqttOptions>().Bind(configuration.GetSection(MqttOptions.Section)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<MqttOptions>, MqttOptionsValidator>();
        services.AddSingleton<MqttBridge>();
        services.AddSingleton<MqttWildcards>();
        services.AddConnections();
        services.AddSingleton<MqttConnectionHandler>();
        services.AddSingleton<MqttWebSocketRequest>();
        services.AddHostedService<MqttBroker>();
        return services;
    }

    public static IEndpointRouteBuilder MapMqttTransport(this IEndpointRouteBuilder app)
    {
        var options = app.ServiceProvider.GetRequiredService<IOptions<MqttOptions>>().Value;
        if (options.WebSockets)
        {
            var proxies = app.ServiceProvider.GetRequiredService<Proxies.BackendProxies>();
            app.MapConnectionHandler<MqttWebSocketRequest>(options.WebSocketPath, o =>
            {
                o.WebSockets.SubProtocolSelector = MqttSubProtocolSelector.SelectSubProtocol;
            }).Add(endpoint =>
            {
                if (endpoint.RequestDelegate is { } dispatch)
                {
                    endpoint.RequestDelegate = http => MqttWebSocketRequest.ServeAsync(http, dispatch, proxies);
                }
            });
            app.MapsPush(new PushEndpoint(options.WebSocketPath, MqttConnection.TransportName, AuthenticatesInProtocol: true));
        }

        return app;
    }
}

/// <summary>MQTT over WebSocket: hands the connection to the broker's handler with what its HTTP request tells the
/// connect proxy (cookies, configured headers) at hand for CONNECT (<see cref="Current"/>), as raw WebSocket and SSE
/// give theirs. The client's token is its CONNECT password, which the bridge sends.</summary>
internal sealed class MqttWebSocketRequest(MqttConnectionHandler broker) : ConnectionHandler
{
    // Set on the request, before the connection's handler starts: it flows into the handler, which the broker awaits
    // for the whole connection, CONNECT included. The handler never reads the request itself: it runs beside the
    // WebSocket upgrade, which changes the request's features meanwhile (reading cookies there failed at times with a
    // NullReferenceException inside ASP.NET Core, which closed the connection before its CONNACK).
    private static readonly AsyncLocal<Proxies.ConnectProxyRequest?> Request = new();

    /// <summary>What the WebSocket request whose MQTT connection is being served tells the connect proxy (null over TCP).</summary>
    public static Proxies.ConnectProxyRequest? Current => Request.Value;

    /// <summary>The endpoint's request delegate: takes what the connect proxy is told, then dispatches the connection.</summary>
    public static async Task ServeAsync(HttpContext http, RequestDelegate dispatch, Proxies.BackendProxies proxies)
    {
        Request.Value = proxies.RequestOf(MqttConnection.TransportName, null, http.Request) with { Token = null };
        await dispatch(http);
    }

    public override Task OnConnectedAsync(ConnectionContext connection) => broker.OnConnectedAsync(connection);
}

/// <summary>Runs the broker for as long as the gateway runs.</summary>
internal sealed class MqttBroker(MqttBridge bridge, MqttConnectionHandler webSockets, IOptions<MqttOptions> options, ILogger<MqttBroker> logger) : IHostedService, IAsyncDisposable
{
    private MqttServer? _server;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var o = options.Value;
        var builder = new MqttServerOptionsBuilder()
            .WithMaxPendingMessagesPerClient(1000)
            .WithPendingMessagesOverflowStrategy(MqttPendingMessagesOverflowStrategy.DropNewMessage)
            .WithPersistentSessions(false);
        var adapters = new List<IMqttServerAdapter> { new MqttChannelListener(webSockets) };
        if (o.Port > 0)
        {
            // MQTTnet opens an IPv4 and an IPv6 listener unless told otherwise: bind exactly the configured address.
            var address = o.ParsedBindAddress;
            var v6 = address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6;
            builder.WithDefaultEndpoint()
                .WithDefaultEndpointBoundIPAddress(v6 ? System.Net.IPAddress.None : address)
                .WithDefaultEndpointBoundIPV6Address(v6 ? address : System.Net.IPAddress.None)
                .WithDefaultEndpointPort(o.Port);
            adapters.Add(new MqttChannelListener(new TolerantAdapter(new MqttTcpServerAdapter(), o, logger)));
        }
        else
        {
            MqttLog.TcpOff(logger);
        }

        var serverOptions = builder.Build();
        _server = new MqttServer(serverOptions, adapters, new BrokerLogger(logger));
        bridge.Attach(_server);
        await _server.StartAsync();
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_server is { } server)
        {
            // What the drain did not close yet goes now; MQTT 5 clients hear "server shutting down" and reconnect elsewhere.
            await server.StopAsync(new MqttServerStopOptions
            {
                DefaultClientDisconnectOptions = new MqttServerClientDisconnectOptions
                {
                    ReasonCode = MQTTnet.Protocol.MqttDisconnectReasonCode.ServerShuttingDown,
                    ReasonString = WireCodes.Shutdown,
                },
            });
        }
    }

    public ValueTask DisposeAsync()
    {
        _server?.Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>A TCP listener that cannot bind (the port is taken) is logged loudly and leaves the rest of the gateway,
    /// MQTT over WebSocket included, running.</summary>
    private sealed class TolerantAdapter(IMqttServerAdapter inner, MqttOptions options, ILogger logger) : IMqttServerAdapter
    {
        public Func<IMqttChannelAdapter, Task>? ClientHandler
        {
            get => inner.ClientHandler;
            set => inner.ClientHandler = value;
        }

        public async Task StartAsync(MqttServerOptions serverOptions, IMqttNetLogger mqttLogger)
        {
            try
            {
                await inner.StartAsync(serverOptions, mqttLogger);
                MqttLog.TcpListening(logger, options.BindAddress, options.Port);
            }
            catch (System.Net.Sockets.SocketException ex)
            {
                MqttLog.TcpListenFailed(logger, options.BindAddress, options.Port, ex);
            }
        }

        public Task StopAsync() => inner.StopAsync();

        public void Dispose() => inner.Dispose();
    }

    /// <summary>MQTTnet's own log: its warnings and errors (protocol violations, I/O failures) go to ours.</summary>
    private sealed class BrokerLogger(ILogger logger) : IMqttNetLogger
    {
        public bool IsEnabled => logger.IsEnabled(LogLevel.Warning);

        public void Publish(MqttNetLogLevel logLevel, string source, string message, object[] parameters, Exception exception)
        {
            if (logLevel is MqttNetLogLevel.Warning or MqttNetLogLevel.Error)
            {
                var text = parameters is { Length: > 0 } ? string.Format(System.Globalization.CultureInfo.InvariantCulture, message, parameters) : message;
                MqttLog.Broker(logger, source + ": " + text, exception);
            }
        }
    }
}
