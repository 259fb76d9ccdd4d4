using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace OrleansPush.Hosting.Webhooks;

public static class WebhookHosting
{
    /// <summary>Webhook options (validated at start), the event producer, and the event topics' namespace: its history
    /// holds <see cref="WebhookOptions.MaxBacklog"/> events for as long as the longest <c>MaxAge</c>.</summary>
    public static IServiceCollection AddWebhooks(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddValidatedOptions<WebhookOptions, WebhookOptionsValidator>(configuration, WebhookOptions.Section);
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<WebhookEvents>();
        services.AddSingleton<IPostConfigureOptions<TopicOptions>>(sp => new PostConfigureOptions<TopicOptions>(Options.DefaultName, topics =>
        {
            var webhooks = sp.GetRequiredService<IOptions<WebhookOptions>>().Value;
            var kept = webhooks.LongestMaxAge();
            topics.Namespaces[WebhookOptions.Namespace] = new NamespaceOptions
            {
                HistorySize = webhooks.MaxBacklog,
                HistoryTtl = kept,
                PositionTtl = kept > NamespaceOptions.DefaultPositionTtl ? kept : NamespaceOptions.DefaultPositionTtl,
            };
        }));
        return services;
    }
}
